"""Counts the instructions a release linkedge executes per request (callgrind, all threads).

Started by run.sh. PATHS (default click,health; proxy: a request proxied to a local backend)
chooses what is measured. EXTRA_YAML (with {work} for the scratch directory) is appended to the
config, e.g. EXTRA_YAML='access_log: { to: "{work}/access.log" }'. For each binary: a fresh redis-server and linkedge on free loopback ports,
2,000 requests to warm up, counters zeroed, N keep-alive requests (a browser's User-Agent),
counters dumped. Prints instructions per request for a click and for /health, and the functions
whose own cost differs most between the first binary and each other one. A binary given as
floor-proxy:PATH, floor-app:PATH or floor-raw:PATH is examples/floor (PATH its build) run as that kind
(floor-pass:PATH, Pingora proxying with no hook, is measured for PATHS=proxy only): it
answers every request with the same 302, so its two rows agree.
"""
import collections
import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests(port, path, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        c.request("GET", path, headers={"User-Agent": UA})
        r = c.getresponse()
        r.read()
        if r.status not in (200, 302):
            sys.exit(f"{path}: answered {r.status}")
        if (r.getheader("connection") or "").lower() == "close":
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def self_costs(path):
    """Instructions per function (its own, not its callees'), from a callgrind file."""
    costs, fn, skip = collections.Counter(), None, False
    for line in open(path):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("calls="):
            skip = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if skip:
                    skip = False
                else:
                    costs[fn] += int(parts[1])
    return costs


class Upstream(http.server.BaseHTTPRequestHandler):
    """The backend of `proxy`: `{}` to /health (its health check) and a small page to the rest."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"{}" if self.path == "/health" else b"<html>upstream page</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def measure(binary, what, n, work):
    redis_port, http_port, metrics_port, https_port = (free_port() for _ in range(4))
    upstream = None
    extra = os.environ.get("EXTRA_YAML", "")
    if what == "proxy":
        upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        extra += (f"\nregions: {{ us: {{ backends: [{{ addr: \"127.0.0.1:{upstream.server_port}\" }}] }} }}"
                  f"\nrouting: {{ default_region: us }}\n")
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    seed = int(os.environ.get("SEED_BLOCKS", "0"))
    if seed:
        # SEED_BLOCKS=N: N block rules loaded (benches/blocks/seed.py), none matching the click.
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([sys.executable, str(ROOT / "benches/blocks/seed.py"), str(redis_port), str(seed)],
                       check=True)
    key = work / "link-key"
    key.write_text("instructions-bench-key-not-a-secret-0123456789")
    conf = work / "linkedge.yaml"
    conf.write_text(f"""
listen: {{ http: 127.0.0.1:{http_port}, https: 127.0.0.1:{https_port}, metrics: 127.0.0.1:{metrics_port} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{redis_port}/" }}
links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {key} }}] }}
events: {{ spool: {{ dir: {work}/spool }} }}
server: {{ threads: 1, pid_file: {work}/pid, upgrade_sock: {work}/upgrade.sock, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }}
""" + extra.replace("{work}", str(work)))
    out = work / f"callgrind.{what}"
    for f in work.glob(f"callgrind.{what}*"):
        f.unlink()
    floor = binary.split(":", 1) if binary.startswith("floor-") else None
    command = ([floor[1], floor[0].removeprefix("floor-"), f"127.0.0.1:{http_port}"] if floor
               else [binary, "serve", "--config", str(conf)])
    if floor and floor[0] == "floor-pass":
        command.append(f"127.0.0.1:{upstream.server_port}")
    # CACHE_SIM=1: callgrind's cache simulation too (first-level and last-level misses per
    # request, printed to stderr), for costs instructions do not show.
    cache = ["--cache-sim=yes"] if os.environ.get("CACHE_SIM") == "1" else []
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           "--dump-instr=no", "--compress-strings=no", "--compress-pos=no",
                           *cache, *command],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), 0.5).close()
                break
            except OSError:
                if time.time() > deadline or vg.poll() is not None:
                    sys.exit(f"{binary} did not start under valgrind")
                time.sleep(0.5)
        path = "/health"
        if floor and what == "proxy":
            path = "/proxied/page"
        elif floor:
            path = "/c/floor"  # any path: the floor answers every request alike
        elif what == "proxy":
            path = "/proxied/page"
            time.sleep(3)  # the backend's first health check
        elif what == "click":
            url = subprocess.run([binary, "link", "mint", "--config", str(conf), "--host", "127.0.0.1",
                                  "--url", "https://example.com/landing"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            path = "/c/" + url.rsplit("/c/", 1)[1]
        requests(http_port, path, 2000)
        # SETTLE_S: seconds before counting (a large block list loads slowly under valgrind).
        time.sleep(float(os.environ.get("SETTLE_S", "1")))
        subprocess.run(["callgrind_control", "-z", str(vg.pid)], capture_output=True, check=True)
        requests(http_port, path, n)
        time.sleep(1)  # the writer's last batch
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], capture_output=True, check=True)
        time.sleep(1)
    finally:
        # The floor has no short grace period configured: SIGINT stops it at once.
        vg.send_signal(signal.SIGINT if floor else signal.SIGTERM)
        vg.wait(60)
        redis.terminate()
        redis.wait(10)
        if upstream:
            upstream.shutdown()
    dump = Path(f"{out}.1")
    total = next(int(l.split()[1]) for l in open(dump) if l.startswith(("summary:", "totals:")))
    if cache:
        names = next(l.split()[1:] for l in open(dump) if l.startswith("events:"))
        sums = next(l.split()[1:] for l in open(dump) if l.startswith(("summary:", "totals:")))
        per = {k: int(v) / n for k, v in zip(names, sums)}
        print(f"{what}: per request " + ", ".join(f"{k} {v:.0f}" for k, v in per.items()),
              file=sys.stderr)
    return total / n, self_costs(dump)


def main():
    n, binaries = int(sys.argv[1]), sys.argv[2:]
    work = Path(tempfile.mkdtemp(prefix="linkedge-instructions-"))
    results = {}
    paths = os.environ.get("PATHS", "click,health").split(",")
    for what in paths:
        for b in binaries:
            # floor-pass only proxies; the other floors only answer.
            if (what == "proxy") != b.startswith("floor-pass") and b.startswith("floor-"):
                continue
            per, costs = measure(b, what, n, work)
            results[(b, what)] = (per, costs)
            print(f"{what:6} {per:9.0f} instructions/request  {b}", flush=True)
    for b in binaries[1:]:
        for what in [w for w in paths if (binaries[0], w) in results and (b, w) in results]:
            base, costs0 = results[(binaries[0], what)]
            per, costs = results[(b, what)]
            print(f"\n{what}: {b} against {binaries[0]}: {per - base:+.0f} instructions/request "
                  f"({(per / base - 1) * 100:+.1f}%); largest changes per request:")
            keys = sorted(set(costs0) | set(costs), key=lambda k: -abs(costs[k] - costs0[k]))
            for k in keys[:int(os.environ.get("TOP", "12"))]:
                print(f"  {(costs[k] - costs0[k]) / n:+8.0f}  {k[-110:]}")


if __name__ == "__main__":
    main()
