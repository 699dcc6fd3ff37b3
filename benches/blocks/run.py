#!/usr/bin/env python3
"""Block list costs (#26), by benches/blocks/run.sh.

1. Load time and memory: a release linkedge started against a Redis holding N rules
   (benches/blocks/seed.py's mix); the load time its log reports, and its RSS once loaded
   against the same process with none: bytes per rule. N = 100,000 and 1,000,000.
2. Scenario 1 with 100,000 rules against none: two linkedge nodes (each its own Redis), one
   worker pinned to core 0 in turn, wrk with 64 keep-alive connections on core 1 following one
   click whose destination no rule matches (the common case, which the check must not slow),
   alternating rounds; redirects per second and linkedge's CPU per 10,000.
   With --together, both nodes run at once on core 0, each under its own wrk (32 connections,
   both on core 1), so that whatever else the machine does slows both alike: each round's ratio
   of CPU per click (and of redirects per second, the core being shared evenly) compares two
   builds that ran through the same moments.
Prints a summary and writes JSON to benches/blocks/results/.
"""
import argparse
import atexit
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import run as load  # noqa: E402

ROOT = load.ROOT
HERE = ROOT / "benches" / "blocks"
BINARY = str(ROOT / "target/release/linkedge")
URL = ("https://shop.example.com/collections/winter-sale/products/merino-wool-scarf?"
       "utm_source=newsletter&utm_medium=email&utm_campaign=2026-12-winter")


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def node(work, name, redis_port):
    ports = {k: load.free_port() for k in ("http", "metrics")}
    key = work / "key"
    key.write_text("bench-link-key-not-a-secret-0123456789abcdef")
    cfg = work / f"{name}.yaml"
    cfg.write_text(f"""
listen: {{ http: 127.0.0.1:{ports['http']}, metrics: 127.0.0.1:{ports['metrics']} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{redis_port}/" }}
links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {key} }}] }}
events: {{ spool: {{ dir: {work}/spool-{name} }} }}
server: {{ threads: 1, pid_file: {work}/{name}.pid, upgrade_sock: {work}/{name}.sock }}
""")
    srv = load.Server(name, [BINARY, "serve", "--config", str(cfg)], ports["http"],
                      env={"RUST_LOG": "info"})
    atexit.register(srv.stop)
    return srv, ports, cfg


def loaded(srv, n, timeout=300):
    """Waits until the node's log says it loaded n rules; the load's seconds."""
    log = load.WORK / f"{srv.name}.log"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in log.read_text().splitlines():
            m = re.search(r"block list loaded rules=(\d+) seconds=([\d.e-]+)", line)
            if m and int(m.group(1)) == n:
                return float(m.group(2))
        time.sleep(0.2)
    sys.exit(f"{srv.name} did not load {n} rules")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--no-memory", action="store_true", help="skip the load time and memory part")
    p.add_argument("--together", action="store_true",
                   help="load both nodes at once on the same core (see above)")
    args = p.parse_args()
    load.WORK = Path(tempfile.mkdtemp(prefix="linkedge-blocks-bench-"))
    work = load.WORK
    results = {"memory": {}}

    empty_port = load.start_redis(work, "empty")
    if not args.no_memory:
        memory(work, empty_port, results)

    print(f"\n== scenario 1: 100,000 rules against none, {args.rounds} alternating rounds (ABBA) of "
          f"{args.duration} s", flush=True)
    rp = load.start_redis(work, "s100k")
    subprocess.run([sys.executable, str(HERE / "seed.py"), str(rp), "100000"], check=True)
    nodes = {}
    for name, port, n in (("none", empty_port, 0), ("100k-rules", rp, 100_000)):
        srv, ports, cfg = node(work, f"s-{name}", port)
        loaded(srv, n)
        url = subprocess.run([BINARY, "link", "mint", "--config", str(cfg), "--host", "127.0.0.1",
                              "--url", URL], capture_output=True, text=True, check=True).stdout.strip()
        path = "/c/" + url.rsplit("/c/", 1)[1]
        nodes[name] = (srv, ports, path)
    if args.together:
        results["scenario1_together"] = together(nodes, args)
        write(results)
        return
    per = {n: [] for n in nodes}
    for r in range(args.rounds):
        # A B, then B A: neither side always runs first (the machine warms and cools).
        order = list(nodes.items()) if r % 2 == 0 else list(reversed(nodes.items()))
        for name, (srv, ports, path) in order:
            res = load.measure(srv, lambda: load.run_wrk(f"http://127.0.0.1:{ports['http']}{path}",
                                                           args.duration, headers=(load.BROWSER_UA,)))
            if res["errors"]:
                sys.exit(f"{name}: {res['errors']}")
            per[name].append(res)
            print(f"  round {r + 1} {name:11} {res['rps']:>9.0f} req/s  cpu/10k "
                  f"{res['cpu_s_per_10k']:.3f}s  p99 {res['p99'] * 1e3:.2f}ms", flush=True)
    summary = {}
    for name, runs in per.items():
        xs = [r["rps"] for r in runs]
        cs = [r["cpu_s_per_10k"] for r in runs]
        summary[name] = {"rps": {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)},
                         "cpu_s_per_10k": {"mean": sum(cs) / len(cs), "min": min(cs), "max": max(cs)},
                         "runs": runs}
    ratio = summary["100k-rules"]["rps"]["mean"] / summary["none"]["rps"]["mean"]
    cpu = summary["100k-rules"]["cpu_s_per_10k"]["mean"] / summary["none"]["cpu_s_per_10k"]["mean"]
    # Each round's own ratio: the two sides of a round ran back to back, so the machine's slow
    # swings cancel; their mean and its 95% interval (normal approximation).
    pairs = [b["rps"] / a["rps"] for a, b in zip(per["none"], per["100k-rules"])]
    pm = sum(pairs) / len(pairs)
    sd = (sum((x - pm) ** 2 for x in pairs) / max(len(pairs) - 1, 1)) ** 0.5
    half = 1.96 * sd / len(pairs) ** 0.5
    print(f"\nscenario 1 with 100,000 rules: {ratio:.3f}x the throughput with none "
          f"({(ratio - 1) * 100:+.1f}%), CPU per 10k clicks {(cpu - 1) * 100:+.1f}%")
    print(f"per-round ratios: mean {(pm - 1) * 100:+.1f}%, 95% interval "
          f"{(pm - half - 1) * 100:+.1f}% to {(pm + half - 1) * 100:+.1f}% over {len(pairs)} rounds")
    results["scenario1"] = summary | {"ratio": ratio, "cpu_ratio": cpu, "round_ratios": pairs,
                                      "round_ratio_mean": pm, "round_ratio_ci95": half}
    write(results)


def memory(work, empty_port, results):
    """Load time and RSS per rule for 100,000 and 1,000,000 rules, against a node with none."""
    print("== load time and memory per rule", flush=True)
    base, _, _ = node(work, "none", empty_port)
    loaded(base, 0)
    time.sleep(1)
    base_rss = rss_kb(base.proc.pid)
    for n in (100_000, 1_000_000):
        rp = load.start_redis(work, f"r{n}")
        subprocess.run([sys.executable, str(HERE / "seed.py"), str(rp), str(n)], check=True)
        srv, _, _ = node(work, f"n{n}", rp)
        secs = loaded(srv, n)
        time.sleep(1)
        rss = rss_kb(srv.proc.pid)
        per = (rss - base_rss) * 1024 / n
        results["memory"][n] = {"load_s": secs, "rss_kb": rss, "base_rss_kb": base_rss,
                                "bytes_per_rule": per}
        print(f"  {n:>9} rules: loaded in {secs:.2f} s; RSS {base_rss / 1024:.1f} -> "
              f"{rss / 1024:.1f} MiB: {per:.0f} bytes per rule", flush=True)
        srv.stop()
    base.stop()


def write(results):
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / time.strftime("blocks-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"written {out}")


def interval(xs):
    """Mean and 95% half-interval (normal approximation) of xs."""
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5
    return m, 1.96 * sd / len(xs) ** 0.5


def together(nodes, args):
    """Both nodes loaded at once (see the module's documentation); per-round ratios."""
    print(f"  together: both nodes at once on core 0, {args.rounds} rounds of {args.duration} s",
          flush=True)
    names = list(nodes)
    rounds = []
    for r in range(args.rounds):
        pids = {n: load.proc_pids(nodes[n][0].proc.pid) for n in names}
        cpu0 = {n: load.cpu_seconds(pids[n]) for n in names}
        out = {}

        def drive(name):
            _, ports, path = nodes[name]
            out[name] = load.run_wrk(f"http://127.0.0.1:{ports['http']}{path}", args.duration,
                                     conns=32, headers=(load.BROWSER_UA,))

        # Neither side always starts first.
        threads = [threading.Thread(target=drive, args=(n,))
                   for n in (names if r % 2 == 0 else names[::-1])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row = {}
        for n in names:
            res = out[n]
            if res["errors"]:
                sys.exit(f"{n}: {res['errors']}")
            cpu = load.cpu_seconds(pids[n]) - cpu0[n]
            row[n] = {"rps": res["rps"], "requests": res["requests"], "cpu_s": cpu,
                      "cpu_us_per_click": cpu / res["requests"] * 1e6, "p99": res["p99"]}
        a, b = row[names[0]], row[names[1]]
        row["rps_ratio"] = b["rps"] / a["rps"]
        row["cpu_ratio"] = b["cpu_us_per_click"] / a["cpu_us_per_click"]
        rounds.append(row)
        print(f"  round {r + 1}: {names[0]} {a['rps']:>7.0f} req/s {a['cpu_us_per_click']:.2f} µs/click; "
              f"{names[1]} {b['rps']:>7.0f} req/s {b['cpu_us_per_click']:.2f} µs/click; "
              f"rate {(row['rps_ratio'] - 1) * 100:+.1f}%, CPU per click {(row['cpu_ratio'] - 1) * 100:+.1f}%",
              flush=True)
    rm, rh = interval([x["rps_ratio"] for x in rounds])
    cm, ch = interval([x["cpu_ratio"] for x in rounds])
    print(f"\ntogether, {names[1]} against {names[0]} over {len(rounds)} rounds: redirects per second "
          f"{(rm - 1) * 100:+.1f}% (95%: {(rm - rh - 1) * 100:+.1f}% to {(rm + rh - 1) * 100:+.1f}%), "
          f"CPU per click {(cm - 1) * 100:+.1f}% (95%: {(cm - ch - 1) * 100:+.1f}% to "
          f"{(cm + ch - 1) * 100:+.1f}%)")
    return {"rounds": rounds, "rps_ratio": rm, "rps_ratio_ci95": rh, "cpu_ratio": cm,
            "cpu_ratio_ci95": ch}


if __name__ == "__main__":
    main()
