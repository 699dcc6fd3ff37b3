#!/usr/bin/env python3
"""TLS resumption across the fleet (#27), by benches/tickets/run.sh.

Two release linkedge nodes (one worker each, pinned to core 0) share one Redis (core 1), so
they seal session tickets with the same keys; examples/hsload on core 1 opens a new TCP and
TLS connection per request (`GET /health`, SNI app.linkedge.test, the client's default key
exchange groups: X25519MLKEM768 first, as current browsers).

1. Full against resumed handshakes on one node, in alternating rounds: handshakes per second
   and the node's CPU per handshake.
2. A client alternating between the two nodes, offering its last session each time: the share
   of handshakes resumed (expected: all but each client's first).
Prints a summary and writes JSON to benches/tickets/results/.
"""
import argparse
import atexit
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import run as load  # noqa: E402

ROOT = load.ROOT
HERE = ROOT / "benches" / "tickets"
BINARY = str(ROOT / "target/release/linkedge")
HSLOAD = str(ROOT / "target/release/examples/hsload")
SNI = "app.linkedge.test"


def node(work, name, redis_port):
    ports = {k: load.free_port() for k in ("http", "https", "metrics")}
    (work / "key").write_text("bench-link-key-not-a-secret-0123456789abcdef")
    # A bench-only master key (not a secret: it seals nothing real).
    (work / "master").write_text("42" * 32)
    cfg = work / f"{name}.yaml"
    cfg.write_text(f"""
listen: {{ http: 127.0.0.1:{ports['http']}, https: 127.0.0.1:{ports['https']}, metrics: 127.0.0.1:{ports['metrics']} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
certs: {{ master_key: 1, master_keys: [{{ id: 1, secret_file: {work}/master }}] }}
redis: {{ url: "redis://127.0.0.1:{redis_port}/" }}
links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {work}/key }}] }}
events: {{ spool: {{ dir: {work}/spool-{name} }} }}
server: {{ threads: 1, pid_file: {work}/{name}.pid, upgrade_sock: {work}/{name}.sock }}
""")
    srv = load.Server(name, [BINARY, "serve", "--config", str(cfg)], ports["https"])
    atexit.register(srv.stop)
    return srv, ports


def hsload(addr, seconds, concurrency, resume=False, also=None):
    cmd = ["taskset", "-c", load.LOAD_CORE, HSLOAD, addr, "--seconds", str(seconds),
           "--concurrency", str(concurrency), "--sni", SNI]
    cmd += ["--resume"] if resume else []
    cmd += ["--also", also] if also else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"]:
        sys.exit(f"hsload: {r['errors']} failed ({r['first_error']})")
    return {"requests": r["handshakes"], "resumed": r["resumed"], "rps": r["per_second"],
            "p50": r["p50"], "p99": r["p99"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    load.WORK = Path(tempfile.mkdtemp(prefix="linkedge-tickets-bench-"))
    work = load.WORK
    rp = load.start_redis(work, "tickets")
    a, pa = node(work, "a", rp)
    b, pb = node(work, "b", rp)
    deadline = time.time() + 20
    while time.time() < deadline and not all(
            load.metric(p["metrics"], "linkedge_tls_ticket_keys_version") >= 1 for p in (pa, pb)):
        time.sleep(0.2)
    addr_a, addr_b = f"127.0.0.1:{pa['https']}", f"127.0.0.1:{pb['https']}"
    print(f"== full against resumed handshakes on one node, {args.rounds} alternating rounds "
          f"(ABBA) of {args.duration} s, {args.concurrency} clients", flush=True)
    per = {"full": [], "resumed": []}
    kinds = [("full", False), ("resumed", True)]
    for r in range(args.rounds):
        for kind, resume in (kinds if r % 2 == 0 else kinds[::-1]):
            res = load.measure(a, lambda: hsload(addr_a, args.duration, args.concurrency, resume))
            res["cpu_us_per_handshake"] = res["cpu_s"] / max(res["requests"], 1) * 1e6
            per[kind].append(res)
            print(f"  round {r + 1} {kind:8} {res['rps']:>8.0f}/s  resumed {res['resumed']:>7}  "
                  f"cpu {res['cpu_us_per_handshake']:.0f} µs per handshake  p99 "
                  f"{res['p99'] * 1e3:.2f} ms", flush=True)
    summary = {}
    for kind, runs in per.items():
        cpu = [x["cpu_us_per_handshake"] for x in runs]
        rps = [x["rps"] for x in runs]
        summary[kind] = {"cpu_us": {"mean": sum(cpu) / len(cpu), "min": min(cpu), "max": max(cpu)},
                         "rps": {"mean": sum(rps) / len(rps), "min": min(rps), "max": max(rps)},
                         "runs": runs}
    full, res = summary["full"]["cpu_us"]["mean"], summary["resumed"]["cpu_us"]["mean"]
    print(f"\nCPU per handshake: full {full:.0f} µs, resumed {res:.0f} µs "
          f"({res / full:.2f}x); handshakes per second per core: full "
          f"{summary['full']['rps']['mean']:.0f}, resumed {summary['resumed']['rps']['mean']:.0f}")

    print("\n== a client alternating between the two nodes, offering its last session", flush=True)
    alt = hsload(addr_a, args.duration, args.concurrency, resume=True, also=addr_b)
    share = alt["resumed"] / max(alt["requests"], 1)
    print(f"  {alt['requests']} handshakes, {alt['resumed']} resumed ({share * 100:.2f}%; "
          f"each of the {args.concurrency} clients' first cannot be)", flush=True)
    out = {"one_node": summary, "alternating": alt | {"share_resumed": share},
           "clients": args.concurrency}
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / time.strftime("tickets-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"written {path}")


if __name__ == "__main__":
    main()
