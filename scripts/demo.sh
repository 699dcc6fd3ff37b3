#!/usr/bin/env bash
# Quick start: installs what is missing, starts a local Redis if none answers on 6379, builds
# linkedge, prints a demo link and the curl lines that follow it, then serves conf/dev.yaml in the
# foreground (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
cargo build --bin linkedge
bin=target/debug/linkedge
url=$($bin link mint --config conf/dev.yaml --host localhost --url https://example.com/welcome \
  --workspace 7 --message 1001 --link 3)
token=${url##*/}
cat <<MSG

Demo link: $url

In another terminal, follow it over HTTPS (the dev CA is in certs-dev/) or plain HTTP:
  curl -i --cacert certs-dev/dev-ca.pem --connect-to localhost:443:127.0.0.1:8443 '$url'
  curl -i -H 'Host: localhost' 'http://127.0.0.1:8080/c/$token'
The same link on another Host (what a proxy that rewrites Host causes):
  curl -i -H 'Host: other.example' 'http://127.0.0.1:8080/c/$token'
Health, the recorded click, and metrics:
  curl -i http://127.0.0.1:8080/health
  redis-cli xrange linkedge:events - +
  curl -s http://127.0.0.1:9090/metrics | grep ^linkedge_

MSG
exec $bin serve --config conf/dev.yaml
