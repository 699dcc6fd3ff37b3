#!/usr/bin/env bash
# Block list costs (#26): load time and memory per rule for 100,000 and 1,000,000 rules, and
# scenario 1 (keep-alive click redirects, wrk) with 100,000 rules loaded against none, in
# alternating rounds. Builds linkedge in release mode first.
#   benches/blocks/run.sh [--rounds 3] [--duration 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"; $sudo apt-get update; $sudo apt-get install -y wrk; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: linkedge on core 0, wrk and Redis on core 1" >&2; exit 1; }
cargo build --release --bin linkedge
exec python3 benches/blocks/run.py "$@"
