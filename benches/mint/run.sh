#!/usr/bin/env bash
# POST /v1/links (#24) and POST /v1/rewrite (#25) throughput: batches of 1,000 links, JSON and
# NDJSON, and a 100 KB email with 40 links, in alternating rounds; links (emails) per second and
# per CPU-second of linkedge (one worker, core 0; wrk on core 1).
# Builds linkedge in release mode first.
#   benches/mint/run.sh [--rounds 5] [--duration 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"; $sudo apt-get update; $sudo apt-get install -y wrk; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: linkedge on core 0, wrk and Redis on core 1" >&2; exit 1; }
cargo build --release --bin linkedge
exec python3 benches/mint/run.py "$@"
