#!/usr/bin/env bash
# Builds the agent's .deb, installs it, checks what it installed, and purges it again.
#
#   cargo deb (stripped) → dpkg -i → files, modes, group, enabled unit → systemd-analyze verify
#   → rearview/rearviewd --version from /usr/bin → the daemon running (the unit, or by hand as
#   the unit would when systemd is not PID 1): a rearview-admin member runs `rearview status`,
#   a non-member is refused → dpkg --purge leaves nothing behind
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

# The CLI for the admin group: a non-root member of rearview-admin runs `rearview status`
# against the installed, running daemon; a non-member is refused. With systemd as PID 1 the
# unit itself runs; otherwise rearviewd is started by hand as the unit would start it, with
# /run/rearview made as RuntimeDirectory=/RuntimeDirectoryMode=0750 make it (root:root 0750).
member=rvcheck-admin
outsider=rvcheck-other
cleanup_cli_check() {
  if [ -n "${daemon_pid:-}" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  [ -d /run/systemd/system ] && systemctl stop rearviewd 2>/dev/null || true
  userdel "$member" 2>/dev/null || true
  userdel "$outsider" 2>/dev/null || true
}
trap cleanup_cli_check EXIT
getent passwd "$member" >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin -G rearview-admin "$member"
getent passwd "$outsider" >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin "$outsider"
if [ -d /run/systemd/system ]; then
  systemctl start rearviewd
  echo "rearviewd started by systemd"
else
  rm -rf /run/rearview
  install -d -m 0750 -o root -g root /run/rearview
  (umask 0077; exec /usr/bin/rearviewd --config /etc/rearview/agent.toml) >/tmp/check-deb-rearviewd.log 2>&1 &
  daemon_pid=$!
  echo "systemd is not PID 1 here: rearviewd started by hand as the unit would (pid $daemon_pid)"
fi
for _ in $(seq 100); do [ -S /run/rearview/rearview.sock ] && break; sleep 0.1; done
[ -S /run/rearview/rearview.sock ] || fail "the daemon made no socket (see /tmp/check-deb-rearviewd.log)"
[ "$(stat -c '%U:%G %a' /run/rearview)" = "root:rearview-admin 750" ] ||
  fail "/run/rearview is $(stat -c '%U:%G %a' /run/rearview), not root:rearview-admin 750"
runuser -u "$member" -- /usr/bin/rearview status >/tmp/check-deb-status.txt 2>&1 ||
  fail "a member of rearview-admin cannot run 'rearview status': $(cat /tmp/check-deb-status.txt)"
grep -qi "enroll" /tmp/check-deb-status.txt || fail "'rearview status' printed no status: $(cat /tmp/check-deb-status.txt)"
if runuser -u "$outsider" -- /usr/bin/rearview status >/dev/null 2>&1; then
  fail "a user outside rearview-admin got the status"
fi
echo "rearview status works for a member of rearview-admin and is refused to others"
cleanup_cli_check
trap - EXIT
daemon_pid=

dpkg --purge rearview-agent
for f in /usr/bin/rearviewd /usr/bin/rearview /etc/rearview /var/lib/rearview \
         /etc/systemd/system/multi-user.target.wants/rearviewd.service; do
  [ ! -e "$f" ] || fail "$f left behind after purge"
done
! getent group rearview-admin >/dev/null || fail "group rearview-admin left behind after purge"
echo "check-deb: ok"
