#!/usr/bin/env bash
# Builds the agent's .deb, installs it, checks what it installed, and purges it again; then the
# console's (below, after the agent's).
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
echo "rearview-agent: ok"

# The console's package, the same way: files and modes, its system user and data dir, the
# enabled (not started) unit, systemd-analyze verify, --version from /usr/bin, a first start as
# the unit would start it, purge.
deb=$(cargo deb -p rearview-console --strip | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not produce the console's package"
echo "built $deb ($(du -h "$deb" | cut -f1))"

dpkg --purge rearview-console >/dev/null 2>&1 || true
dpkg -i "$deb"

for f in /usr/bin/rearview-console /etc/rearview/console.env \
         /usr/lib/systemd/system/rearview-console.service; do
  [ -e "$f" ] || fail "$f not installed"
done
getent passwd rearview-console >/dev/null || fail "user rearview-console not created"
[ "$(getent passwd rearview-console | cut -d: -f7)" = /usr/sbin/nologin ] ||
  fail "user rearview-console can log in"
[ "$(stat -c '%U:%G %a' /var/lib/rearview-console)" = "rearview-console:rearview-console 700" ] ||
  fail "/var/lib/rearview-console is $(stat -c '%U:%G %a' /var/lib/rearview-console), not rearview-console 0700"
[ "$(stat -c '%U:%G %a' /etc/rearview/console.env)" = "root:rearview-console 640" ] ||
  fail "console.env is $(stat -c '%U:%G %a' /etc/rearview/console.env), not root:rearview-console 0640"
grep -qx /etc/rearview/console.env /var/lib/dpkg/info/rearview-console.conffiles ||
  fail "console.env is not a conffile"
[ -L /etc/systemd/system/multi-user.target.wants/rearview-console.service ] ||
  fail "rearview-console.service is not enabled"
# Every variable serve reads is documented (commented out) in the env file.
for v in REARVIEW_DATA REARVIEW_LISTEN REARVIEW_DATABASE REARVIEW_BLOBS AWS_ENDPOINT_URL \
         AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ALLOW_HTTP; do
  grep -q "^#$v=" /etc/rearview/console.env || fail "console.env does not document $v"
done
if [ -d /run/systemd/system ]; then
  ! systemctl is-active --quiet rearview-console || fail "rearview-console was started on install"
fi

systemd-analyze verify /usr/lib/systemd/system/rearview-console.service
/usr/bin/rearview-console --version | grep -x "rearview-console [0-9.]*" || fail "rearview-console --version"

# A first start: `init` as the service user (the step the env file and the unit name), then
# `serve` with nothing but the unit's environment, and /healthz. With systemd as PID 1 the unit
# itself runs; otherwise serve is started by hand as the unit would (its user, its Environment=
# lines, then the env file), on a free port rather than 8443.
runuser -u rearview-console -- /usr/bin/rearview-console init --data /var/lib/rearview-console \
  >/dev/null 2>/tmp/check-deb-console-init.txt ||
  fail "rearview-console init as its user failed: $(cat /tmp/check-deb-console-init.txt)"
serve_help=$(/usr/bin/rearview-console serve --help)
if ! grep -q REARVIEW_DATA <<<"$serve_help"; then
  echo "rearview-console serve takes no REARVIEW_* variables yet: the first start is not checked" >&2
else
  console_pid=
  cleanup_console_check() {
    if [ -n "${console_pid:-}" ]; then kill "$console_pid" 2>/dev/null || true; wait "$console_pid" 2>/dev/null || true; fi
    [ -d /run/systemd/system ] && systemctl stop rearview-console 2>/dev/null || true
  }
  trap cleanup_console_check EXIT
  if [ -d /run/systemd/system ]; then
    systemctl start rearview-console
    echo "rearview-console started by systemd"
  else
    unit_env=$(sed -n 's/^Environment=//p' /usr/lib/systemd/system/rearview-console.service)
    file_env=$(grep -v '^[[:space:]]*#' /etc/rearview/console.env | grep = || true)
    # shellcheck disable=SC2086 # one VAR=value a word, as systemd reads them
    (umask 0077; exec env -i PATH=/usr/bin:/bin $unit_env $file_env REARVIEW_LISTEN=127.0.0.1:0 \
      setpriv --reuid=rearview-console --regid=rearview-console --init-groups \
      /usr/bin/rearview-console serve) >/tmp/check-deb-console.log 2>&1 &
    console_pid=$!
    echo "systemd is not PID 1 here: rearview-console serve started by hand as the unit would (pid $console_pid)"
  fi
  for _ in $(seq 300); do [ -s /var/lib/rearview-console/console.url ] && break; sleep 0.1; done
  [ -s /var/lib/rearview-console/console.url ] ||
    fail "serve wrote no console.url (see /tmp/check-deb-console.log or journalctl -u rearview-console)"
  url=$(cat /var/lib/rearview-console/console.url)
  serve_pid=${console_pid:-$(systemctl show -p MainPID --value rearview-console 2>/dev/null || true)}
  [ "$(stat -c %U "/proc/$serve_pid" 2>/dev/null)" = rearview-console ] ||
    fail "serve (pid $serve_pid) does not run as rearview-console"
  [ "$(curl -fsS --max-time 10 "$url/healthz")" = ok ] || fail "$url/healthz is not ok"
  echo "rearview-console serves $url as its user; /healthz is ok"
  cleanup_console_check
  trap - EXIT
  console_pid=
fi

dpkg --purge rearview-console
for f in /usr/bin/rearview-console /etc/rearview /var/lib/rearview-console \
         /usr/lib/systemd/system/rearview-console.service \
         /etc/systemd/system/multi-user.target.wants/rearview-console.service; do
  [ ! -e "$f" ] || fail "$f left behind after purge"
done
! getent passwd rearview-console >/dev/null || fail "user rearview-console left behind after purge"
! getent group rearview-console >/dev/null || fail "group rearview-console left behind after purge"
echo "rearview-console: ok"
echo "check-deb: ok"
