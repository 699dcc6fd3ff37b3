#!/usr/bin/env bash
# TLS resumption across the fleet (#27): full against resumed handshakes on one node (CPU per
# handshake), and the share resumed for clients alternating between two nodes that share
# session-ticket keys through Redis. Builds linkedge and examples/hsload in release mode first.
#   benches/tickets/run.sh [--rounds 3] [--duration 8] [--concurrency 32]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: linkedge on core 0, the client and Redis on core 1" >&2; exit 1; }
cargo build --release --bin linkedge --example hsload
exec python3 benches/tickets/run.py "$@"
