#!/usr/bin/env bash
# Builds the agent's .deb, installs it, checks what it installed, and purges it again.
#
#   cargo deb (stripped) → dpkg -i → files, modes, group, enabled unit → systemd-analyze verify
#   → rearview/rearviewd --version from /usr/bin → dpkg --purge leaves nothing behind
#
# Needs root (it installs a package). Run by .ci/run; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { printf 'check-deb: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the package)"

# Packaging tools besides the build's: cargo-deb's dependency scan (dpkg-shlibdeps), what the
# maintainer scripts call, and `systemd-analyze verify`.
scripts/setup-debian.sh dpkg-dev adduser init-system-helpers systemd
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version 3.8.0
fi

# Stripped: the release profile keeps line tables for profiling; the package does not need them.
deb=$(cargo deb -p rearview-agent --strip | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not produce a package"
echo "built $deb ($(du -h "$deb" | cut -f1))"

dpkg --purge rearview-agent >/dev/null 2>&1 || true
dpkg -i "$deb"

for f in /usr/bin/rearviewd /usr/bin/rearview /etc/rearview/agent.toml \
         /usr/lib/systemd/system/rearviewd.service; do
  [ -e "$f" ] || fail "$f not installed"
done
[ "$(stat -c %a /var/lib/rearview)" = 700 ] || fail "/var/lib/rearview is not 0700"
[ "$(stat -c %a /etc/rearview/agent.toml)" = 640 ] || fail "agent.toml is not 0640"
getent group rearview-admin >/dev/null || fail "group rearview-admin not created"
[ -L /etc/systemd/system/multi-user.target.wants/rearviewd.service ] ||
  fail "rearviewd.service is not enabled"

systemd-analyze verify /usr/lib/systemd/system/rearviewd.service
/usr/bin/rearview --version | grep -x "rearview [0-9.]*" || fail "rearview --version"
/usr/bin/rearviewd --version | grep -x "rearviewd [0-9.]*" || fail "rearviewd --version"

dpkg --purge rearview-agent
for f in /usr/bin/rearviewd /usr/bin/rearview /etc/rearview /var/lib/rearview \
         /etc/systemd/system/multi-user.target.wants/rearviewd.service; do
  [ ! -e "$f" ] || fail "$f left behind after purge"
done
! getent group rearview-admin >/dev/null || fail "group rearview-admin left behind after purge"
echo "check-deb: ok"
