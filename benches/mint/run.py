#!/usr/bin/env python3
"""POST /v1/links (#24) and POST /v1/rewrite (#25) throughput, by benches/mint/run.sh.

A release linkedge (one worker, pinned to core 0) with 1,000 registered domains; wrk (core 1,
two connections) posts the same batch of 1,000 links (distinct ids, 60- to 120-byte
destinations, hosts spread over the registered domains) for `--duration` seconds per round,
JSON and NDJSON alternating, then a 100 KB marketing email with 40 links through
POST /v1/rewrite. Per round: links (or emails) per second, linkedge's CPU seconds (user +
system, every thread) and links (emails) per CPU-second, which is per second per core; p99 of
a request. Every answer is checked once first (1,000 minted; 40 links tracked). Prints a summary and writes JSON to
benches/mint/results/.
"""
import argparse
import atexit
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


def email():
    """About 100 KB of HTML with 40 tracked links (as benches/rewrite.rs builds it)."""
    words = "Soft merino wool, knitted in Scotland, warm without weight and kind to skin. " * 28
    doc = ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Winter sale</title>'
           '<style>body{margin:0}a{color:#1a73e8}</style></head><body>'
           '<table role="presentation" width="100%" cellpadding="0" cellspacing="0">')
    for i in range(38):
        doc += (f'<tr><td style="padding:16px 24px;font-family:Arial,sans-serif;font-size:14px;'
                f'line-height:20px;color:#333333;"><img src="https://cdn.example.com/p/{i}.jpg" '
                f'width="260" height="260" alt="Product {i}" style="display:block;border:0;" />'
                f'<h2 style="margin:12px 0;">Product {i}</h2><p>{words}</p>'
                f'<a href="https://shop.example.com/p/{i}?utm_source=newsletter&amp;utm_medium=email'
                f'&amp;utm_campaign=winter&amp;utm_content=product-{i}" style="color:#1a73e8;">Shop '
                f'product {i}</a></td></tr>')
    doc += ('<tr><td><!--[if mso]><v:roundrect href="https://shop.example.com/sale" '
            'style="height:48px;width:240px;" fillcolor="#1a73e8"><center>Shop</center>'
            '</v:roundrect><![endif]--><a href="https://shop.example.com/sale">Shop</a> '
            '<a href="mailto:help@example.com">Help</a></td></tr></table></body></html>')
    return doc.encode()


def post(port, body, ctype, path="/v1/links"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
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
    atexit.register(redis.terminate)
    load.wait_port(rp, "redis-server", redis)
    (work / "key").write_text("bench-link-key-not-a-secret-0123456789abcdef")
    (work / "admin").write_text(TOKEN)
    cfg = work / "linkedge.yaml"
    cfg.write_text(f"""
listen: {{ http: 127.0.0.1:{ports['http']}, metrics: 127.0.0.1:{ports['metrics']} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
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
    atexit.register(le.stop)
    deadline = time.time() + 30
    while load.metric(ports["metrics"], "linkedge_registry_domains") < DOMAINS:
        if time.time() > deadline:
            sys.exit("the registry mirror did not load every domain")
        time.sleep(0.1)
    batch = items()
    rewrite_path = "/v1/rewrite?host=link0.example.net&workspace=4242&message=123456789012"
    # name: (body, content type, path, units per request)
    bodies = {
        "json": (json.dumps(batch).encode(), "application/json", "/v1/links", BATCH),
        "ndjson": ("\n".join(json.dumps(i) for i in batch).encode() + b"\n", "application/x-ndjson",
                   "/v1/links", BATCH),
        "rewrite": (email(), "text/html", rewrite_path, 1),
    }
    for name, (body, ctype, path, _) in bodies.items():
        (work / f"{name}.body").write_bytes(body)
        (work / f"{name}.lua").write_text(LUA.format(token=TOKEN, ctype=ctype, body=work / f"{name}.body"))
        answer = post(ports["metrics"], body, ctype, path)
        if name == "rewrite":
            tracked = answer.count(b"https://link0.example.net/c/")
            if tracked != 40:
                sys.exit(f"rewrite: {tracked} of 40 links tracked")
            continue
        minted = (json.loads(answer)["minted"] if name == "json"
                  else sum(1 for line in answer.splitlines() if b'"url"' in line))
        if minted != BATCH:
            sys.exit(f"{name}: {minted} of {BATCH} minted: {answer[:300]!r}")
    print(f"batch of {BATCH} links: JSON {len(bodies['json'][0])} bytes; every link minted; "
          f"email of {len(bodies['rewrite'][0])} bytes: 40 links tracked", flush=True)
    per = {n: [] for n in bodies}
    pids = load.proc_pids(le.proc.pid)
    for r in range(args.rounds):
        for name in bodies:
            c0 = load.cpu_seconds(pids)
            path, units = bodies[name][2], bodies[name][3]
            out = subprocess.run(["taskset", "-c", load.LOAD_CORE, "wrk", "-t1", "-c2",
                                  f"-d{args.duration}s", "--latency", "-s", str(work / f"{name}.lua"),
                                  f"http://127.0.0.1:{ports['metrics']}{path}"],
                                 capture_output=True, text=True, check=True).stdout
            cpu = load.cpu_seconds(pids) - c0
            reqs = int(re.search(r"(\d+) requests in", out).group(1))
            secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            p99 = load.to_seconds(dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))["99"])
            res = {"requests": reqs, "per_s": reqs * units / secs, "cpu_s": cpu,
                   "per_cpu_s": reqs * units / max(cpu, 1e-9), "p99_request_s": p99,
                   "errors": int(bad.group(1)) if bad else 0}
            per[name].append(res)
            unit = "emails" if name == "rewrite" else "links"
            print(f"  round {r + 1} {name:7} {res['per_s']:>10.0f} {unit}/s  cpu {cpu:5.2f}s  "
                  f"{res['per_cpu_s']:>10.0f} {unit}/cpu-s  p99 {p99 * 1e3:.1f}ms/request  "
                  f"errors {res['errors']}", flush=True)
    le.stop()
    redis.terminate()
    summary = {}
    for name, runs in per.items():
        xs = [r["per_cpu_s"] for r in runs]
        ws = [r["per_s"] for r in runs]
        unit = "emails" if name == "rewrite" else "links"
        summary[name] = {"unit": unit,
                         "per_cpu_s": {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)},
                         "per_s": {"mean": sum(ws) / len(ws), "min": min(ws), "max": max(ws)},
                         "errors": sum(r["errors"] for r in runs), "runs": runs}
        print(f"{name:7}: {summary[name]['per_cpu_s']['mean']:.0f} {unit} per CPU-second "
              f"({min(xs):.0f}-{max(xs):.0f}), {summary[name]['per_s']['mean']:.0f} {unit}/s wall, "
              f"errors {summary[name]['errors']}")
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / time.strftime("mint-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"rounds": args.rounds, "duration": args.duration, "batch": BATCH,
                               "domains": DOMAINS, "summary": summary}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
