#!/usr/bin/env bash
# The Rearview demo: the whole loop on one machine, on embedded defaults, in a temp directory.
#
#   console init (the admin and the first approver, two people) → serve → an investigator
#   joins → a device enrolls → admin requests capture of this user → the approver approves (the
#   admin may not, nor can an approver account the admin adds) → the user works on a desktop →
#   a trigger for "file copied to removable media" → the agent uploads the clip → the
#   investigator exports it as PNG frames and JSON Lines events (audited; 0700/0600) → and as
#   an evidence package, which rearview-verify checks offline (the device's signed chain, the
#   console's signed records, the custody log) → the investigator signs in to the web UI: the
#   demo ends by printing its URL and a sign-in, and, run from a terminal, keeps the console
#   serving until Ctrl-C.
#
# Uses the current X display when $DISPLAY works, else starts a private Xvfb. Leaves everything
# under $REARVIEW_DEMO_DIR (default: a new temp directory) and prints where.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\n\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

step "installing system packages (if missing) and building (release)"
scripts/setup-debian.sh
cargo build --release -q -p rearview-console -p rearview-agent -p rearview-verify
target=${CARGO_TARGET_DIR:-$root/target}/release
console=$target/rearview-console
rearviewd=$target/rearviewd
rearview=$target/rearview
verify=$target/rearview-verify

demo=${REARVIEW_DEMO_DIR:-$(mktemp -d /tmp/rearview-demo.XXXXXX)}
mkdir -p "$demo"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# ---- a display -------------------------------------------------------------------------------
if [ -n "${DISPLAY:-}" ] && xdpyinfo >/dev/null 2>&1; then
  step "using the current display $DISPLAY"
else
  step "no usable display: starting a private Xvfb (1280x800)"
  exec 3< <(Xvfb -displayfd 1 -screen 0 1280x800x24 -nolisten tcp -noreset 2>"$demo/xvfb.log")
  read -r -t 20 num <&3 || fail "Xvfb did not start (see $demo/xvfb.log)"
  export DISPLAY=":$num"
  pids+=("$(pgrep -n -x Xvfb)")
  echo "Xvfb on $DISPLAY"
fi

# ---- the console -----------------------------------------------------------------------------
step "console: creating tenant 'demo' in $demo/console (first admin and first approver)"
"$console" init --data "$demo/console" --tenant demo --admin admin --approver approver >"$demo/init.txt"
# Each token is on its own labelled line: "admin token (NAME): rvp_…".
admin_token=$(awk '/^admin token \(/ {print $NF}' "$demo/init.txt")
approver_token=$(awk '/^approver token \(/ {print $NF}' "$demo/init.txt")
[ -n "$admin_token" ] && [ -n "$approver_token" ] || fail "init printed no tokens (see $demo/init.txt)"
grep -v ' token (' "$demo/init.txt"
echo "admin 'admin' and approver 'approver' created, each with their own token"

step "console: serving on 127.0.0.1 (a free port)"
"$console" serve --data "$demo/console" --listen 127.0.0.1:0 >"$demo/console.log" 2>&1 &
console_pid=$!
pids+=("$console_pid")
for _ in $(seq 100); do [ -s "$demo/console/console.url" ] && break; sleep 0.1; done
[ -s "$demo/console/console.url" ] || fail "console did not start (see $demo/console.log)"
url=$(cat "$demo/console/console.url")
echo "console at $url"
as_admin=(--server "$url" --token "$admin_token")

step "console: admin turns capture on (off by default): 1 fps, 5 s segments"
"$console" policy set "${as_admin[@]}" \
  --json '{"capture": {"enabled": true, "fps": 1, "segment_secs": 5}}' >/dev/null

as_approver=(--server "$url" --token "$approver_token")

step "console: admin adds an investigator (the only role that may export clips)"
investigator_token=$("$console" person add "${as_admin[@]}" --name investigator --role investigator | jq -r .token)

# ---- the agent -------------------------------------------------------------------------------
step "agent: enrolling this device with a one-time token"
enroll_token=$("$console" enrollment-token create "${as_admin[@]}" | jq -r .token)
mkdir -p "$demo/agent"
cat >"$demo/agent/agent.toml" <<EOF
server_url = "$url"
data_dir = "$demo/agent/data"
[cli]
socket = "$demo/agent/rearview.sock"
[capture]
display = "$DISPLAY"
[log]
level = "info"
EOF
"$rearviewd" --config "$demo/agent/agent.toml" --enroll-token "$enroll_token" >"$demo/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$demo/agent/rearview.sock" ] && break; sleep 0.1; done
[ -S "$demo/agent/rearview.sock" ] || fail "agent did not start (see $demo/agent.log)"
me=$(id -un)
echo "agent running; it records nobody until an approval is in force"

# ---- approval: requested by the admin, approved by someone else --------------------------------
step "approval: admin requests capture of '$me' (specific activities)"
approval=$("$console" approval request "${as_admin[@]}" --user "$me" \
  --justification "demo: data-exfiltration investigation" | jq -r .id)
echo "request #$approval"
if "$console" approval approve "${as_admin[@]}" "$approval" >/dev/null 2>&1; then
  fail "the requester approved their own request"
fi
echo "the admin approving their own request: refused (as it must be)"
alt_token=$("$console" person add "${as_admin[@]}" --name admin-alt --role approver | jq -r .token)
if "$console" approval approve --server "$url" --token "$alt_token" "$approval" >/dev/null 2>&1; then
  fail "an approver account the admin just added approved the admin's request"
fi
echo "an approver account the admin adds: pending until another approver confirms it, refused"
"$console" approval approve "${as_approver[@]}" "$approval" >/dev/null
echo "approved by 'approver'"

step "agent: waiting for the new policy and for capture of '$me' to start"
for _ in $(seq 100); do
  "$rearview" --socket "$demo/agent/rearview.sock" --json status >"$demo/status.json" 2>/dev/null || true
  jq -e '[.sessions[]? | select(.capture == "capturing")] | length > 0' "$demo/status.json" >/dev/null 2>&1 && break
  sleep 0.2
done
"$rearview" --socket "$demo/agent/rearview.sock" status || true

# ---- the user works ----------------------------------------------------------------------------
step "the user works: a terminal, some typing"
secret="ROADMAP-$(date +%s)"
xterm -geometry 100x30+40+40 -bg '#0b2a4a' -fg white -fa Monospace -fs 14 -T "demo terminal" &
pids+=($!)
sleep 2
xdotool search --sync --name "demo terminal" windowactivate --sync 2>/dev/null || true
xdotool type --delay 60 "echo copying roadmap.docx to /media/usb  # $secret"
xdotool key Return
sleep 4

# ---- the trigger -------------------------------------------------------------------------------
step "console: trigger 'file copied to removable media: roadmap.docx' (10 s before, 5 s after)"
trigger=$("$console" trigger issue "${as_admin[@]}" --user "$me" --before 10 --after 5 \
  --reason "file copied to removable media: roadmap.docx")
alert_id=$(echo "$trigger" | jq -r .alert_id)
echo "alert #$alert_id, trigger(s) $(echo "$trigger" | jq -r '.trigger_ids | join(", ")')"

step "waiting for the clip (the after-window has to pass, then upload)"
clip=$("$console" clip wait "${as_admin[@]}" --alert "$alert_id" --timeout 90) ||
  fail "no complete clip within 90 s (see $demo/agent.log and $demo/console.log)"
clip_id=$(echo "$clip" | jq -r .id)
echo "$clip" | jq -c '{id, user, complete, segments: (.manifest.segments | length)}' 2>/dev/null || true

step "investigator export: opening the sealed segments with the tenant key"
"$console" clip export "$clip_id" --data "$demo/console" --out "$demo/export" \
  --token "$investigator_token" >/dev/null
frames=$(find "$demo/export/frames" -name '*.png' | wc -l)
events=$(wc -l <"$demo/export/events.jsonl")
typed=$(jq -r 'select(.kind.type == "key_press") | .kind.text // empty' "$demo/export/events.jsonl" | tr -d '\n' | head -c 200)

step "evidence package for someone else, checked offline with rearview-verify"
summary=$("$console" clip export --evidence "$demo/evidence" "$clip_id" --data "$demo/console" \
  --token "$investigator_token")
fingerprint=$(echo "$summary" | jq -r .console_key)
(cd "$demo/evidence" && sha256sum --quiet -c SHA256SUMS) || fail "evidence package sums do not hold"
"$verify" "$demo/evidence" --console-key "$fingerprint" ||
  fail "rearview-verify refused the package (see above)"

step "done"
echo "clip $clip_id: $frames frames (PNG), $events events (JSON Lines)"
echo "typed in the window: $typed"
echo "frames and events: $demo/export"
echo "evidence package (verified): $demo/evidence"
echo "everything else (logs, console data, agent ring): $demo"

# ---- the browser -----------------------------------------------------------------------------
# The investigator sets their own password (with their own token; nobody else learns it).
password="demo-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 12)"
printf '%s\n' "$password" | "$console" person password --server "$url" --token "$investigator_token" >/dev/null
step "review in a browser"
echo "open:     $url/clips"
echo "sign in:  investigator / $password"
echo "(people are shown by pseudonym; opening a clip is audited)"
if [ -t 1 ]; then
  echo "the console keeps serving until Ctrl-C"
  trap 'echo; echo stopped; exit 0' INT
  while kill -0 "$console_pid" 2>/dev/null; do sleep 1; done
  fail "the console stopped (see $demo/console.log)"
fi
