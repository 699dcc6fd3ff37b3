#!/usr/bin/env bash
# One command from a fresh clone: installs the load tools and reference servers from Debian's
# packages if missing, builds linkedge in release mode, and runs benches/load/run.py, which prints
# the table, writes raw JSON under benches/load/results/ and the table to results/latest.md.
#   benches/load/run.sh [--duration 10] [--rounds 2] [--scenarios 1,2,3,4,5,6] [--sustain 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v caddy >/dev/null || missing+=(caddy)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y "${missing[@]}"
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: servers on core 0, load on core 1" >&2; exit 1; }
cargo build --release --bin linkedge --example hsload --example seed_certs --example floor
exec python3 benches/load/run.py "$@"
