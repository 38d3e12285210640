#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, then runs every test of the
# workspace (on the default backends: SQLite and files), then the console's whole suite again on
# PostgreSQL and an S3 bucket. Tests that need a display, a PostgreSQL cluster or an S3 server
# start their own (Xvfb, the test kit's private cluster, moto_server); nothing has to be started
# by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo test --workspace --all-targets "$@"
# The same console tests on the fleet backends (console/tests/support/backend.rs): a database
# of a private PostgreSQL cluster and a bucket of moto_server per console; the bucket takes any
# credentials, these are the ones the S3 client signs with. Run from the binaries the line
# above built, as cargo runs them (from the package's directory): `cargo test -p
# rearview-console` would build the console a second time, with the package's own features.
mapfile -t console_tests < <(
  cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null |
    jq -r --arg dir "$PWD/console/" 'select(.reason == "compiler-artifact" and .profile.test
      and .executable != null and (.target.src_path | startswith($dir))) | .executable')
[ ${#console_tests[@]} -gt 0 ] || { echo "test.sh: no console test binaries found" >&2; exit 1; }
failed=()
for t in "${console_tests[@]}"; do
  echo "fleet backends: $(basename "$t")"
  (cd console && REARVIEW_TEST_STORE=postgres REARVIEW_TEST_BLOBS=s3 \
    AWS_ACCESS_KEY_ID=rearview-test AWS_SECRET_ACCESS_KEY=rearview-test AWS_REGION=us-east-1 \
    "$t") || failed+=("$(basename "$t")")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: on the fleet backends, failed: ${failed[*]}" >&2
  exit 1
fi
