#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Rearview builds, tests and demos with, plus any named as
# arguments (scripts/check-deb.sh adds its packaging tools), and the S3 test server from PyPI.
# Idempotent: does nothing, quietly, when everything is already there. Needs root (or sudo).
set -euo pipefail

packages=(
  # build: C toolchain for -sys crates, pkg-config, and the X11 libraries xcap/rdev/x11rb link
  build-essential pkg-config libclang-dev
  libx11-dev libxext-dev libxtst-dev libxi-dev libxrandr-dev libxfixes-dev
  libxcb1-dev libxcb-shm0-dev libxcb-randr0-dev libdbus-1-dev
  libpipewire-0.3-dev libwayland-dev libegl-dev libgbm-dev
  # tests, benches and demo: a real X server, real X clients, xdotool to drive them
  xvfb xdotool x11-xserver-utils x11-utils xterm
  # the desktop notice test runs a real session bus
  dbus-daemon
  # the acceptance test creates its users (useradd) and copies as one of them (runuser)
  passwd util-linux
  # the demo script reads the console CLI's JSON answers
  jq
  # the console's PostgreSQL store is tested on a real server: the test kit initdb's a private
  # cluster per test process (a system cluster the package may start is not used)
  postgresql
  # codec benchmark anchors (libx264rgb); optional at run time, installed for comparable figures
  ffmpeg
  "$@"
)

# The S3-speaking server the blob-store tests run (moto_server, from PyPI: Debian has no
# package). Pinned, so every machine tests against the same S3 behaviour.
moto="moto[server]==5.2.1"
if ! command -v moto_server >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  packages+=(python3 python3-pip)
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing from PyPI: $moto" >&2
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  if [ -e "$stdlib/EXTERNALLY-MANAGED" ]; then
    # Debian 12+'s own python (PEP 668): pip may install into /usr/local only when told to.
    $sudo python3 -m pip install --quiet --break-system-packages "$moto" >&2
  elif [ -w "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" ]; then
    # A python of our own (pyenv, a venv): no root needed.
    python3 -m pip install --quiet "$moto" >&2
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  else
    $sudo python3 -m pip install --quiet "$moto" >&2
  fi
  command -v moto_server >/dev/null 2>&1 ||
    { echo "setup-debian: installed $moto, but moto_server is not on PATH ($PATH)" >&2; exit 1; }
fi
