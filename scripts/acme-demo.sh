#!/usr/bin/env bash
# Add a domain and get its certificate from a local pebble, end to end, on loopback only:
# starts pebble-challtestsrv (mock DNS: every name is 127.0.0.1) and pebble, then linkedge with
# conf/acme-demo.yaml, adds link.demo.test, verifies it (which orders the certificate), and
# follows a tracked link over HTTPS trusting pebble's root. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
# LINKEDGE_BIN=target/release/linkedge to run a release build instead.
bin=${LINKEDGE_BIN:-target/debug/linkedge}
[ -n "${LINKEDGE_BIN:-}" ] || cargo build --bin linkedge
conf=conf/acme-demo.yaml
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
pebble-challtestsrv -dns01 127.0.0.1:8053 -http01 "" -https01 "" -tlsalpn01 "" \
  -management 127.0.0.1:8055 -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$work/dns.log" 2>&1 &
pids+=($!)
cat >"$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$PWD/certs-dev/leaf.pem", "privateKey": "$PWD/certs-dev/leaf.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$work/pebble.json" \
  -dnsserver 127.0.0.1:8053 >"$work/pebble.log" 2>&1 &
pids+=($!)
$bin serve --config $conf >"$work/linkedge.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null http://127.0.0.1:5002/health \
    && curl -s -o /dev/null --cacert certs-dev/dev-ca.pem https://127.0.0.1:14000/dir && break
  sleep 0.1
done
set -x
$bin domain remove link.demo.test --config $conf 2>/dev/null || true
$bin cert remove link.demo.test --config $conf 2>/dev/null || true
$bin domain add link.demo.test --workspace 7 --region us --config $conf
curl -s --cacert certs-dev/dev-ca.pem https://127.0.0.1:15000/roots/0 > "$work/pebble-root.pem"
url=$($bin link mint --config $conf --host link.demo.test --url https://example.com/welcome)
start=$(date +%s.%N)
$bin domain verify link.demo.test --config $conf
curl -sS -i --cacert "$work/pebble-root.pem" --connect-to link.demo.test:443:127.0.0.1:8443 "$url"
end=$(date +%s.%N)
set +x
awk -v a="$start" -v b="$end" 'BEGIN { printf "from domain verify to the first HTTPS redirect with the new certificate: %.3f s\n", b - a }'
set -x
$bin domain show link.demo.test --config $conf
$bin cert show link.demo.test --config $conf
set +x
echo "linkedge log: $work/linkedge.log (Ctrl-C to stop pebble and linkedge)"
wait
