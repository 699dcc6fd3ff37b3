#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind over every thread of a release
# linkedge (the event writer included), for a click and for /health. Instruction counts do not
# depend on what else the machine runs: two runs of the same binary agree within 0.1%, where
# req/s on this shared machine moves by 10% from one run to the next. Use it to compare builds:
#   benches/instructions/run.sh [--requests N] [BINARY...]     (default: target/release/linkedge)
# A BINARY of floor-proxy:PATH, floor-app:PATH or floor-raw:PATH runs examples/floor (Pingora
# answering a fixed 302 from request_filter, or from an HttpServerApp with no proxy; or tokio and
# httparse with no Pingora): the floor under linkedge.
# SEED_BLOCKS=N loads N block rules (benches/blocks/seed.py) that the click does not match.
# Prints one line per binary and path; with several binaries, the differences. Kernel time
# (syscalls, loopback TCP) is not counted: it is what benches/load measures.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=5000
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) n=$2; shift 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --bin linkedge
  bins=(target/release/linkedge)
fi
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
command -v redis-server >/dev/null || scripts/deps.sh
exec python3 benches/instructions/run.py "$n" "${bins[@]}"
