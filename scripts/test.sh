#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, then runs every test of the
# workspace. Tests that need a display start their own Xvfb; nothing has to be started by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo test --workspace --all-targets "$@"
