#!/usr/bin/env python3
"""POST /v1/links throughput (#24), by benches/mint/run.sh.

A release linkedge (one worker, pinned to core 0) with 1,000 registered domains; wrk (core 1,
two connections) posts the same batch of 1,000 links (distinct ids, 60- to 120-byte
destinations, hosts spread over the registered domains) for `--duration` seconds per round,
JSON and NDJSON alternating. Per round: links per second, linkedge's CPU seconds (user +
system, every thread) and links per CPU-second, which is links per second per core; p99 of a
batch. Every answer is checked once first (1,000 minted). Prints a summary and writes JSON to
benches/mint/results/.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import run as load  # noqa: E402  (the load harness's helpers)

ROOT = load.ROOT
HERE = ROOT / "benches" / "mint"
TOKEN = "bench-admin-token-not-a-secret-0123456789"
DOMAINS = 1000
BATCH = 1000

LUA = """
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "{ctype}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def items():
    out = []
    for i in range(BATCH):
        host = f"link{i % DOMAINS}.example.net"
        url = ("https://shop.example.com/collections/winter/products/item-%d?utm_source=newsletter"
               "&utm_medium=email&utm_campaign=c%d" % (i, i % 7))[: 60 + (i % 61)]
        kind = "open" if i % 20 == 19 else "click"
        it = {"host": host, "workspace": 4242, "message": 123456789012 + i, "link": i % 40 + 1,
              "kind": kind}
        if kind == "click":
            it["url"] = url
        out.append(it)
    return out


def post(port, body, ctype):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/links", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype})
    return urllib.request.urlopen(req, timeout=30).read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=10)
    args = p.parse_args()
    load.WORK = Path(tempfile.mkdtemp(prefix="linkedge-mint-bench-"))
    work = load.WORK
    binary = str(ROOT / "target/release/linkedge")
    rp = load.free_port()
    ports = {k: load.free_port() for k in ("http", "metrics")}
    redis = subprocess.Popen(["taskset", "-c", load.LOAD_CORE, "redis-server", "--port", str(rp),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(work)], stdout=subprocess.DEVNULL)
    load.wait_port(rp, "redis-server", redis)
    (work / "key").write_text("bench-link-key-not-a-secret-0123456789abcdef")
    (work / "admin").write_text(TOKEN)
    cfg = work / "linkedge.yaml"
    cfg.write_text(f"""
listen: {{ http: 127.0.0.1:{ports['http']}, metrics: 127.0.0.1:{ports['metrics']} }}
redis: {{ url: "redis://127.0.0.1:{rp}/" }}
links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {work}/key }}] }}
admin: {{ token_file: {work}/admin }}
events: {{ spool: {{ dir: {work}/spool }} }}
regions: {{ us: {{ backends: [{{ addr: "127.0.0.1:9" }}] }} }}
server: {{ threads: 1, pid_file: {work}/pid, upgrade_sock: {work}/sock }}
""")
    # The registry: one domain through the CLI, the rest copied from its record in one HSET
    # (a process per domain would take minutes).
    subprocess.run([binary, "domain", "add", "link0.example.net", "--workspace", "4242",
                    "--region", "us", "--config", str(cfg)], check=True, capture_output=True)
    first = load.redis_cli(rp, "HGET", "linkedge:domains", "link0.example.net")
    rest = []
    for i in range(1, DOMAINS):
        rest += [f"link{i}.example.net", first.replace("link0.example.net", f"link{i}.example.net")]
    load.redis_cli(rp, "HSET", "linkedge:domains", *rest)
    le = load.Server("linkedge", [binary, "serve", "--config", str(cfg)], ports["http"],
                     env={"RUST_LOG": "warn"})
    deadline = time.time() + 30
    while load.metric(ports["metrics"], "linkedge_registry_domains") < DOMAINS:
        if time.time() > deadline:
            sys.exit("the registry mirror did not load every domain")
        time.sleep(0.1)
    batch = items()
    bodies = {
        "json": (json.dumps(batch).encode(), "application/json"),
        "ndjson": ("\n".join(json.dumps(i) for i in batch).encode() + b"\n", "application/x-ndjson"),
    }
    for name, (body, ctype) in bodies.items():
        (work / f"{name}.body").write_bytes(body)
        (work / f"{name}.lua").write_text(LUA.format(token=TOKEN, ctype=ctype, body=work / f"{name}.body"))
        answer = post(ports["metrics"], body, ctype)
        minted = (json.loads(answer)["minted"] if name == "json"
                  else sum(1 for line in answer.splitlines() if b'"url"' in line))
        if minted != BATCH:
            sys.exit(f"{name}: {minted} of {BATCH} minted: {answer[:300]!r}")
    print(f"batch of {BATCH} links: JSON {len(bodies['json'][0])} bytes; every link minted", flush=True)
    per = {n: [] for n in bodies}
    pids = load.proc_pids(le.proc.pid)
    for r in range(args.rounds):
        for name in bodies:
            c0 = load.cpu_seconds(pids)
            out = subprocess.run(["taskset", "-c", load.LOAD_CORE, "wrk", "-t1", "-c2",
                                  f"-d{args.duration}s", "--latency", "-s", str(work / f"{name}.lua"),
                                  f"http://127.0.0.1:{ports['metrics']}/v1/links"],
                                 capture_output=True, text=True, check=True).stdout
            cpu = load.cpu_seconds(pids) - c0
            reqs = int(re.search(r"(\d+) requests in", out).group(1))
            secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            p99 = load.to_seconds(dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))["99"])
            res = {"batches": reqs, "links_per_s": reqs * BATCH / secs, "cpu_s": cpu,
                   "links_per_cpu_s": reqs * BATCH / max(cpu, 1e-9), "p99_batch_s": p99,
                   "errors": int(bad.group(1)) if bad else 0}
            per[name].append(res)
            print(f"  round {r + 1} {name:6} {res['links_per_s']:>10.0f} links/s  cpu {cpu:5.2f}s  "
                  f"{res['links_per_cpu_s']:>10.0f} links/cpu-s  p99 {p99 * 1e3:.1f}ms/batch  "
                  f"errors {res['errors']}", flush=True)
    le.stop()
    redis.terminate()
    summary = {}
    for name, runs in per.items():
        xs = [r["links_per_cpu_s"] for r in runs]
        ws = [r["links_per_s"] for r in runs]
        summary[name] = {"links_per_cpu_s": {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)},
                         "links_per_s": {"mean": sum(ws) / len(ws), "min": min(ws), "max": max(ws)},
                         "errors": sum(r["errors"] for r in runs), "runs": runs}
        print(f"{name:6}: {summary[name]['links_per_cpu_s']['mean']:.0f} links per CPU-second "
              f"({min(xs):.0f}-{max(xs):.0f}), {summary[name]['links_per_s']['mean']:.0f} links/s wall, "
              f"errors {summary[name]['errors']}")
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / time.strftime("mint-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"rounds": args.rounds, "duration": args.duration, "batch": BATCH,
                               "domains": DOMAINS, "summary": summary}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
