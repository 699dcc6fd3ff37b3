#!/usr/bin/env bash
# The registry mirror's memory and load time: registers N domains straight into a fresh
# redis-server on a free loopback port (gen.py, as `domain add` would store them), starts
# linkedge (BIN, a release build) against it, waits until its mirror holds all N, and prints its
# RSS and the load time it logged. Compare with N=0 for the baseline:
#   cargo build --release --bin linkedge
#   for n in 0 1000000 0 1000000; do benches/registry/run.sh $n target/release/linkedge; done
set -u
N=$1; BIN=$(realpath "$2")
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
HP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
MP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
D=$(mktemp -d)
redis-server --port $PORT --save '' --appendonly no --dir $D --daemonize yes >/dev/null
sleep 0.5
[ "$N" -gt 0 ] && python3 gen.py $N | redis-cli -p $PORT --pipe >/dev/null
printf 'K%.0s' {1..40} > $D/key
cat > $D/c.yaml <<Y
listen: { http: 127.0.0.1:$HP, metrics: 127.0.0.1:$MP }
tls: { cert: $ROOT/certs-dev/leaf.pem, key: $ROOT/certs-dev/leaf.key }
redis: { url: "redis://127.0.0.1:$PORT/" }
links: { mint_key: 1, keys: [{ id: 1, secret_file: key }] }
events: { spool: { dir: $D/spool } }
server: { threads: 2, pid_file: $D/pid, upgrade_sock: $D/up.sock }
regions:
  us: { backends: [{ addr: "127.0.0.1:9" }] }
  eu: { backends: [{ addr: "127.0.0.1:9" }] }
Y
$BIN serve --config $D/c.yaml > $D/log 2>&1 &
PID=$!
for i in $(seq 1 600); do
  v=$(curl -s http://127.0.0.1:$MP/metrics | awk '/^linkedge_registry_domains /{print $2}')
  [ "${v:-x}" = "$N" ] && [ "$(curl -s http://127.0.0.1:$MP/metrics | awk '/^linkedge_registry_loads_total /{print $2}')" != "0" ] && break
  sleep 0.1
done
sleep 1
RSS=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
LOAD=$(grep -o 'registry mirror loaded.*' $D/log | head -1)
echo "N=$N RSS_KiB=$RSS $LOAD"
kill $PID; wait $PID 2>/dev/null || true
redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true
rm -rf $D
