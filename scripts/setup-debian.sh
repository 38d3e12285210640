#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Rearview builds, tests and demos with, plus any named as
# arguments (scripts/check-deb.sh adds its packaging tools). Idempotent: does nothing when every
# package is already there. Needs root (or sudo).
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
  # codec benchmark anchors (libx264rgb); optional at run time, installed for comparable figures
  ffmpeg
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
