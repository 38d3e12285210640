#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Rearview builds, tests and demos with, plus any named as
# arguments (scripts/check-deb.sh adds its packaging tools), the S3 and SMTP test servers from
# PyPI and the OpenID provider from npm.
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
  # the console's web pages are tested in a real browser: headless Chromium driven over
  # WebDriver by Debian's chromedriver (the test kit's `browser`)
  chromium chromium-driver
  "$@"
)

# The S3-speaking server the blob-store tests run (moto_server, from PyPI: Debian has no
# package). Pinned, so every machine tests against the same S3 behaviour.
moto="moto[server]==5.2.1"
# The SMTP server the console's mail tests send to (the test kit's `smtp` runs it with a small
# handler of its own). Pinned likewise.
aiosmtpd_version="1.4.6"
has_aiosmtpd() {
  python3 -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$aiosmtpd_version')" 2>/dev/null
}
if ! python3 -m pip --version >/dev/null 2>&1 &&
  { ! command -v moto_server >/dev/null 2>&1 || ! has_aiosmtpd; }; then
  packages+=(python3 python3-pip)
fi

# The OpenID Connect provider the console's sign-in tests run (npm's oidc-provider; Debian has
# no package), installed into a directory of its own that the test kit's `oidc` points node at.
# 8.x: the last line that runs on Debian 12's node 18 as well as on node 20.
oidc_provider_version="8.8.1"
node_dir="/usr/local/lib/rearview-test-node"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
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

# pip install "$1", system-wide or into our own python (pyenv, a venv), whichever this is.
pip_install() {
  echo "installing from PyPI: $1" >&2
  local stdlib
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  if [ -e "$stdlib/EXTERNALLY-MANAGED" ]; then
    # Debian 12+'s own python (PEP 668): pip may install into /usr/local only when told to.
    $sudo python3 -m pip install --quiet --break-system-packages "$1" >&2
  elif [ -w "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" ]; then
    # A python of our own (pyenv, a venv): no root needed.
    python3 -m pip install --quiet "$1" >&2
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  else
    $sudo python3 -m pip install --quiet "$1" >&2
  fi
}

if ! command -v moto_server >/dev/null 2>&1; then
  pip_install "$moto"
  command -v moto_server >/dev/null 2>&1 ||
    { echo "setup-debian: installed $moto, but moto_server is not on PATH ($PATH)" >&2; exit 1; }
fi

if ! has_aiosmtpd; then
  pip_install "aiosmtpd==$aiosmtpd_version"
  has_aiosmtpd ||
    { echo "setup-debian: installed aiosmtpd==$aiosmtpd_version, but python3 cannot import it" >&2; exit 1; }
fi

installed=$(node -p "require('$node_dir/node_modules/oidc-provider/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$oidc_provider_version" ]; then
  echo "installing from npm into $node_dir: oidc-provider@$oidc_provider_version" >&2
  $sudo mkdir -p "$node_dir"
  $sudo npm install --prefix "$node_dir" --save-exact --no-audit --no-fund --loglevel=error \
    "oidc-provider@$oidc_provider_version" >&2
fi
