#!/usr/bin/env bash
# Capacity inputs (#23): min_replicas 0 vs 1, Redis memory per event, one shard's ingest from
# linkedge's batches, certificate cache memory. Builds linkedge in release mode first.
#   benches/capacity/run.sh [--rounds 3] [--duration 10] [--certs 10000]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"; $sudo apt-get update; $sudo apt-get install -y wrk; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: linkedge on core 0, load and Redis on core 1" >&2; exit 1; }
cargo build --release --bin linkedge --example hsload --example seed_certs
exec python3 benches/capacity/run.py "$@"
