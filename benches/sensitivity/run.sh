#!/usr/bin/env bash
# Why linkedge's rate moves from one machine to the next while nginx's does not: runs scenario 1
# (HTTP/1.1 keep-alive clicks, wrk -t1 -c64, server pinned to core 0, wrk to core 1) against a
# release linkedge and nginx, each with the machine's clock and with every clock read turned into
# a system call (slowclock.so, LD_PRELOAD: what a clocksource without vDSO support costs, as on
# Xen guests or with hpet/acpi_pm). Prints req/s and context switches per 1,000 requests, and the
# cost of one clock read each way.
#   benches/sensitivity/run.sh [ROUNDS] [SECONDS] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}; secs=${2:-8}; bin=${3:-target/release/linkedge}
[ -x "$bin" ] || cargo build --release --bin linkedge
for t in wrk nginx redis-server gcc taskset; do command -v $t >/dev/null || { echo "needs $t (benches/load/run.sh installs the tools)" >&2; exit 1; }; done
work=$(mktemp -d /tmp/linkedge-sensitivity.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/slowclock.so" benches/sensitivity/slowclock.c
cat > "$work/clk.c" <<'C'
#include <time.h>
#include <stdio.h>
int main(void) { struct timespec t, a, b; clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < 1000000; i++) clock_gettime(CLOCK_MONOTONIC, &t);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.0f ns", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e6); }
C
gcc -O2 -o "$work/clk" "$work/clk.c"
echo "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource); one clock read: $("$work/clk") (vDSO), $(LD_PRELOAD=$work/slowclock.so "$work/clk") (system call)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rp=$(port); hp=$(port); sp=$(port); mp=$(port); np=$(port)
redis-server --port "$rp" --save "" --appendonly no >/dev/null &
echo "sensitivity-bench-key-not-a-secret-0123456789" > "$work/key"
cat > "$work/linkedge.yaml" <<Y
listen: { http: 127.0.0.1:$hp, https: 127.0.0.1:$sp, metrics: 127.0.0.1:$mp }
tls: { cert: $PWD/certs-dev/leaf.pem, key: $PWD/certs-dev/leaf.key }
redis: { url: "redis://127.0.0.1:$rp/" }
links: { mint_key: 1, keys: [{ id: 1, secret_file: $work/key }] }
events: { spool: { dir: $work/spool } }
server: { threads: 1, pid_file: $work/pid, upgrade_sock: $work/upgrade.sock, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }
Y
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<N
daemon off; master_process off; worker_processes 1;
error_log $work/nginx/error.log; pid $work/nginx/pid;
events { worker_connections 1024; }
http { access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$np; location / { return 302 https://example.com/landing; } } }
N
sleep 0.5
url=$("$bin" link mint --config "$work/linkedge.yaml" --host 127.0.0.1 --url https://example.com/landing)
path=/c/${url##*/c/}
ua="User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
one() { # server, preload
  local name=$1 pre=$2 p
  if [ "$name" = linkedge ]; then
    (LD_PRELOAD=$pre exec taskset -c 0 "$bin" serve --config "$work/linkedge.yaml" >"$work/linkedge.log" 2>&1) & p=$hp
  else
    (LD_PRELOAD=$pre exec taskset -c 0 nginx -c "$work/nginx.conf" 2>/dev/null) & p=$np
  fi
  local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  sleep 0.5
  local c0 rps c1
  c0=$(switches $pid)
  rps=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" -H "$ua" "http://127.0.0.1:$p$path" | awk '/Requests\/sec/ { print $2 }')
  c1=$(switches $pid)
  printf "%-8s %-11s %9.0f req/s  %6.1f context switches / 1k requests\n" "$name" "$([ -n "$pre" ] && echo syscall || echo vdso)" "$rps" \
    "$(python3 -c "print(($c1 - $c0) / ($rps * $secs) * 1000)")"
  kill $pid; wait $pid 2>/dev/null || true; sleep 1
}
for r in $(seq 1 "$rounds"); do
  for pre in "" "$work/slowclock.so"; do one linkedge "$pre"; one nginx "$pre"; done
done
