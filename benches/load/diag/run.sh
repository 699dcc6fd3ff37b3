#!/usr/bin/env bash
# Reproduces the diagnosis in BENCHMARKS.md ("What stands in the way", scenario 1): what recording
# each click costs, and the writer's linger. Builds linkedge (release) and a diagnostic variant
# (diag.patch: LINKEDGE_DIAG_DROP_EVENTS drops events instead of queueing them,
# LINKEDGE_DIAG_LINGER_US sets the writer's linger), then alternates, on one pinned core with the
# load on the other, for ROUNDS rounds of SECONDS each:
#   linkedge link path | recording dropped | linger 200us / 5ms / 20ms | linkedge /health
#   nginx fixed 302 | nginx /health
# printing req/s, server CPU ticks and p50..p99.9 for each. The diagnostic variant is never
# installed or committed; it is built from a git worktree under target/.
#   benches/load/diag/run.sh [SECONDS=8] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
SECONDS_EACH=${1:-8}
ROUNDS=${2:-2}
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx: run benches/load/run.sh once (it installs them)" >&2; exit 1; }

# The variant builds in the same target directory (dependencies are reused), then is copied
# aside before the real binary is built again.
DIAG_SRC=$ROOT/target/diag-src
DIAG_BIN=$ROOT/target/linkedge-diag
REAL_BIN=$ROOT/target/release/linkedge
rm -rf "$DIAG_SRC"; git worktree prune
git worktree add --detach "$DIAG_SRC" HEAD >/dev/null
(cd "$DIAG_SRC" && git apply "$ROOT/benches/load/diag/diag.patch" \
  && CARGO_TARGET_DIR=$ROOT/target cargo build --release --bin linkedge)
cp "$REAL_BIN" "$DIAG_BIN"
cargo build --release --bin linkedge

W=$(mktemp -d /tmp/linkedge-diag.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(port); UP=$(port); LH=$(port); LS=$(port); LM=$(port); NH=$(port); NS=$(port); NHS=$(port)
cleanup() {
  [ -f "$W/le.pid" ] && kill "$(cat "$W/le.pid")" 2>/dev/null || true
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1 || true
  git -C "$ROOT" worktree remove --force "$DIAG_SRC" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
taskset -c 1 redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --dir "$W" \
  --daemonize yes >/dev/null
sed -e "s#{dir}#$W#g" -e "s#{root}#$ROOT#g" -e "s#{upstream_port}#$UP#g" -e "s#{http_port}#$NH#g" \
  -e "s#{https_port}#$NS#g" -e "s#{handshake_port}#$NHS#g" benches/load/nginx.conf > "$W/nginx.conf"
taskset -c 0 nginx -p "$W" -c "$W/nginx.conf" 2>/dev/null &
echo "bench-link-key-not-a-secret-0123456789abcdef" > "$W/key"
cat > "$W/le.yaml" <<YAML
listen: { http: 127.0.0.1:$LH, https: 127.0.0.1:$LS, metrics: 127.0.0.1:$LM }
tls: { cert: $ROOT/certs-dev/leaf.pem, key: $ROOT/certs-dev/leaf.key }
redis: { url: "redis://127.0.0.1:$RP/" }
links: { mint_key: 1, keys: [{ id: 1, secret_file: $W/key }] }
events: { spool: { dir: $W/spool, max_bytes: 1GiB } }
server: { threads: 1, pid_file: $W/le.pidfile, upgrade_sock: $W/le.sock }
YAML
TOKEN=$("$REAL_BIN" link mint --config "$W/le.yaml" --host 127.0.0.1 --url https://example.com/landing)
TOKEN=${TOKEN##*/}
cat > "$W/pct.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("%.0f req/s", summary.requests / (summary.duration / 1e6)))
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format("  p%g %.2f ms", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("  errors %d\n", summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
LUA
sleep 1

# one LABEL BIN ENV PATH: start linkedge with BIN and ENV, load PATH, stop it.
one() {
  local label=$1 bin=$2 env=$3 path=$4
  env $env RUST_LOG=warn taskset -c 0 "$bin" serve --config "$W/le.yaml" > "$W/le.log" 2>&1 &
  echo $! > "$W/le.pid"
  for _ in $(seq 100); do curl -s "http://127.0.0.1:$LH/health" >/dev/null && break; sleep 0.05; done
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$LH$path" >/dev/null
  local pid; pid=$(cat "$W/le.pid")
  local c0; c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  local out; out=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_EACH}s" -s "$W/pct.lua" "http://127.0.0.1:$LH$path" | tail -1)
  local c1; c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  printf "%-28s %s  cpu %s ticks\n" "$label" "$out" "$((c1 - c0))"
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$W/le.pid"
}
nginx_one() {
  local label=$1 path=$2
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$NH$path" >/dev/null
  printf "%-28s %s\n" "$label" \
    "$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_EACH}s" -s "$W/pct.lua" "http://127.0.0.1:$NH$path" | tail -1)"
}
for r in $(seq "$ROUNDS"); do
  echo "== round $r"
  one "linkedge /c/ (recording)" "$REAL_BIN" "" "/c/$TOKEN"
  one "diag /c/ (events dropped)" "$DIAG_BIN" "LINKEDGE_DIAG_DROP_EVENTS=1" "/c/$TOKEN"
  for us in 200 5000 20000; do
    one "diag /c/ linger ${us}us" "$DIAG_BIN" "LINKEDGE_DIAG_LINGER_US=$us" "/c/$TOKEN"
  done
  one "linkedge /health" "$REAL_BIN" "" "/health"
  nginx_one "nginx /c/ (fixed 302)" "/c/x"
  nginx_one "nginx /health" "/health"
done
