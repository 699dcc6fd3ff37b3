#!/usr/bin/env python3
"""Capacity inputs (#23), measured on this machine in one run, by benches/capacity/run.sh:

1. events.min_replicas 0 against 1: two linkedge processes (one worker each, pinned to core 0)
   writing to one Redis master with one replica; alternating rounds of keep-alive click
   redirects (wrk, core 1). Per round: redirects per second, linkedge CPU per 10,000, p99, the
   master's CPU per 100,000 events, and how long after the load the stream held every event.
2. Redis memory per event: MEMORY USAGE of the stream (every node sampled) over XLEN, for
   clicks with a realistic destination (UTM parameters) and a browser's User-Agent.
3. What one shard takes from linkedge's pipelined batches at full speed: the master stopped
   (SIGSTOP) while clicks spool, then resumed; the spool's replay rate and the master's CPU.
4. Certificate cache memory: a third linkedge with N stored certificates; RSS before and after
   one full handshake per name (every certificate then cached), over N.

Prints a summary and writes JSON to benches/capacity/results/.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import run as load  # noqa: E402  (the load harness's helpers: servers, wrk, metrics, CPU)

ROOT = load.ROOT
HERE = ROOT / "benches" / "capacity"
URL = ("https://shop.example.com/collections/winter-sale/products/merino-wool-scarf?"
       "utm_source=newsletter&utm_medium=email&utm_campaign=2026-12-winter&utm_content=hero-button")


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def redis_server(port, *extra):
    p = subprocess.Popen(["taskset", "-c", load.LOAD_CORE, "redis-server", "--port", str(port),
                          "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(load.WORK), *extra], stdout=subprocess.DEVNULL)
    load.wait_port(port, "redis-server", p)
    return p


def config(name, ports, redis_port, stream, extra_events="", extra=""):
    key = load.WORK / "bench-link-key"
    path = load.WORK / f"{name}.yaml"
    path.write_text(f"""
listen:
  http: 127.0.0.1:{ports['http']}
  https: 127.0.0.1:{ports['https']}
  metrics: 127.0.0.1:{ports['metrics']}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{redis_port}/" }}
links:
  mint_key: 1
  keys: [{{ id: 1, secret_file: {key} }}]
events:
  stream: {stream}
  spool: {{ dir: {load.WORK}/spool-{name}, max_bytes: 4GiB }}
{extra_events}server: {{ threads: 1, pid_file: {load.WORK}/{name}.pid, upgrade_sock: {load.WORK}/{name}.sock }}
{extra}""")
    return path


def start(name, cfg, ports):
    s = load.Server(name, [args.binary, "serve", "--config", str(cfg)], ports["http"],
                    env={"RUST_LOG": "warn"})
    load.wait_port(ports["https"], f"{name} https")
    return s


def served(port):
    return load.metric(port, 'linkedge_requests_total{route="click",status="302"}')


def xlen(port, stream):
    return int(load.redis_cli(port, "XLEN", stream) or 0)


def mean_spread(xs):
    m = sum(xs) / len(xs)
    return {"mean": m, "min": min(xs), "max": max(xs)}


def replicas_rounds(rp, token, nodes, rounds, seconds, master):
    print(f"\n== min_replicas 0 vs 1: {rounds} alternating rounds of {seconds} s, 64 connections",
          flush=True)
    per = {n: [] for n in nodes}
    for r in range(rounds):
        for name, (srv, ports, stream) in nodes.items():
            m = ports["metrics"]
            s0, x0 = served(m), xlen(rp, stream)
            rc0 = load.cpu_seconds([master.pid])
            res = load.measure(srv, lambda: load.run_wrk(
                f"http://127.0.0.1:{ports['http']}/c/{token}", seconds, headers=(load.BROWSER_UA,)))
            end = time.time()
            n = served(m) - s0
            lag = None
            while time.time() - end < 60:
                if xlen(rp, stream) - x0 >= n:
                    lag = time.time() - end
                    break
                time.sleep(0.01)
            events = xlen(rp, stream) - x0
            res.update({"served": int(n), "events": events, "writer_lag_s": lag,
                        "redis_cpu_s_per_100k": (load.cpu_seconds([master.pid]) - rc0) / max(events, 1) * 1e5,
                        "waits_short": load.metric(m, 'linkedge_events_replica_waits_total{result="short",sink="default"}'),
                        "waits_confirmed": load.metric(m, 'linkedge_events_replica_waits_total{result="confirmed",sink="default"}')})
            print(f"  round {r + 1} {name:14} {res['rps']:>9.0f} req/s  cpu/10k {res['cpu_s_per_10k']:.3f}s  "
                  f"p99 {res['p99'] * 1e3:.2f}ms  redis cpu/100k {res['redis_cpu_s_per_100k']:.3f}s  "
                  f"events {events}/{int(n)}  lag {lag}  {res['errors']}", flush=True)
            per[name].append(res)
    return {name: {k: mean_spread([r[k] for r in runs]) for k in
                   ("rps", "cpu_s_per_10k", "p99", "redis_cpu_s_per_100k")} |
            {"lost": sum(r["served"] - r["events"] for r in runs), "runs": runs}
            for name, runs in per.items()}


def memory_per_event(rp, stream):
    n = xlen(rp, stream)
    used = int(load.redis_cli(rp, "MEMORY", "USAGE", stream, "SAMPLES", "0") or 0)
    print(f"\n== stream memory: {used} bytes for {n} events: {used / max(n, 1):.0f} bytes per event",
          flush=True)
    return {"events": n, "bytes": used, "bytes_per_event": used / max(n, 1)}


def shard_ingest(rp, master, token, srv, ports, stream, seconds):
    """Spool while the master is stopped, then time the replay into it."""
    print(f"\n== shard ingest: {seconds} s of clicks spooled while the master is stopped, then replayed",
          flush=True)
    m = ports["metrics"]
    os.kill(master.pid, signal.SIGSTOP)
    try:
        load.run_wrk(f"http://127.0.0.1:{ports['http']}/c/{token}", seconds, headers=(load.BROWSER_UA,))
        time.sleep(1)
    finally:
        os.kill(master.pid, signal.SIGCONT)
    replayed0 = load.metric(m, 'linkedge_events_total{outcome="replayed",sink="default"}')
    t0, rc0 = time.time(), load.cpu_seconds([master.pid])
    lc0 = load.cpu_seconds(load.proc_pids(srv.proc.pid))
    while time.time() - t0 < 300 and load.metric(m, 'linkedge_event_spool_bytes{sink="default"}') > 0:
        time.sleep(0.02)
    took = time.time() - t0
    replayed = load.metric(m, 'linkedge_events_total{outcome="replayed",sink="default"}') - replayed0
    res = {"replayed": int(replayed), "seconds": took, "events_per_s": replayed / took,
           "redis_cpu_s": load.cpu_seconds([master.pid]) - rc0,
           "linkedge_cpu_s": load.cpu_seconds(load.proc_pids(srv.proc.pid)) - lc0}
    res["redis_cpu_share"] = res["redis_cpu_s"] / took
    print(f"  replayed {int(replayed)} events in {took:.2f} s: {res['events_per_s']:.0f} events/s; "
          f"master CPU {res['redis_cpu_share'] * 100:.0f}% of a core, linkedge "
          f"{res['linkedge_cpu_s'] / took * 100:.0f}%", flush=True)
    return res


def cert_cache(count, rp):
    print(f"\n== certificate cache: {count} certificates stored, one handshake per name", flush=True)
    ports = {k: load.free_port() for k in ("http", "https", "metrics")}
    (load.WORK / "bench-master-key").write_text("ab" * 32)
    cfg = config("certs", ports, rp, "bench:certs", extra=f"""certs:
  master_key: 1
  master_keys: [{{ id: 1, secret_file: {load.WORK}/bench-master-key }}]
  cache_size: {count * 2}
regions:
  us:
    backends: [{{ addr: "127.0.0.1:9" }}]
routing: {{ default_region: us }}
""")
    names = load.WORK / "names.txt"
    subprocess.run([str(ROOT / "target/release/examples/seed_certs"), "--config", str(cfg),
                    "--count", str(count), "--register", str(count), "--names-out", str(names)],
                   check=True, capture_output=True)
    srv = start("certs", cfg, ports)
    deadline = time.time() + 120
    while load.metric(ports["metrics"], "linkedge_registry_domains") < count and time.time() < deadline:
        time.sleep(0.2)
    # One small handshake first so lazily built state is not counted against the cache.
    load.run_handshakes(ports["https"], 1, concurrency=1)
    time.sleep(1)
    before = rss_kb(srv.proc.pid)
    cached = 0
    t = time.time()
    while cached < count and time.time() - t < 120:
        load.run_handshakes(ports["https"], 5, sni_file=names)
        cached = load.metric(ports["metrics"], "linkedge_cert_cache_entries")
    time.sleep(1)
    after = rss_kb(srv.proc.pid)
    srv.stop()
    res = {"certificates": int(cached), "rss_before_kb": before, "rss_after_kb": after,
           "bytes_per_certificate": (after - before) * 1024 / max(cached, 1)}
    print(f"  {int(cached)} cached: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
          f"{res['bytes_per_certificate']:.0f} bytes per certificate", flush=True)
    return res


def main():
    global args
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--certs", type=int, default=10000)
    ap.add_argument("--binary", default=str(ROOT / "target/release/linkedge"))
    args = ap.parse_args()
    load.WORK = Path(tempfile.mkdtemp(prefix="linkedge-capacity-"))
    (load.WORK / "bench-link-key").write_text("bench-link-key-not-a-secret-0123456789abcdef")
    started = []
    try:
        rp, rr = load.free_port(), load.free_port()
        master = redis_server(rp)
        started.append(master)
        replica = redis_server(rr, "--replicaof", "127.0.0.1", str(rp))
        started.append(replica)
        nodes = {}
        for n in (0, 1):
            ports = {k: load.free_port() for k in ("http", "https", "metrics")}
            stream = f"bench:events:r{n}"
            extra = f"  min_replicas: {n}\n  replica_timeout: 250ms\n"
            cfg = config(f"replicas{n}", ports, rp, stream, extra_events=extra)
            srv = start(f"replicas{n}", cfg, ports)
            started.append(srv.proc)
            nodes[f"min_replicas {n}"] = (srv, ports, stream)
        cfg0 = load.WORK / "replicas0.yaml"
        link = subprocess.run([args.binary, "link", "mint", "--config", str(cfg0), "--host", "127.0.0.1",
                               "--url", URL], capture_output=True, text=True, check=True).stdout.strip()
        token = link.rsplit("/", 1)[1]
        for srv, ports, _ in nodes.values():  # warm-up
            load.run_wrk(f"http://127.0.0.1:{ports['http']}/health", 2)
        machine = {"cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                                if l.startswith("model name")), "unknown"),
                   "cores": os.cpu_count(), "kernel": os.uname().release,
                   "redis": load.redis_cli(rp, "INFO", "server").split("redis_version:")[1].split()[0]}
        results = {"machine": machine, "rounds": args.rounds, "duration_s": args.duration}
        results["min_replicas"] = replicas_rounds(rp, token, nodes, args.rounds, args.duration, master)
        results["memory_per_event"] = memory_per_event(rp, "bench:events:r0")
        srv0, ports0, stream0 = nodes["min_replicas 0"]
        results["shard_ingest"] = shard_ingest(rp, master, token, srv0, ports0, stream0, args.duration)
        for s, _, _ in nodes.values():
            s.stop()
        results["cert_cache"] = cert_cache(args.certs, rp)
        out = HERE / "results" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
        print("\nsummary:")
        for name, r in results["min_replicas"].items():
            print(f"  {name}: {r['rps']['mean']:.0f} req/s ({r['rps']['min']:.0f}-{r['rps']['max']:.0f}), "
                  f"cpu/10k {r['cpu_s_per_10k']['mean']:.3f}s, p99 {r['p99']['mean'] * 1e3:.2f}ms, "
                  f"redis cpu/100k {r['redis_cpu_s_per_100k']['mean']:.3f}s, lost {r['lost']}")
        print(f"raw results: {out.relative_to(ROOT)}")
    finally:
        for p in started[::-1]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        import shutil
        shutil.rmtree(load.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
