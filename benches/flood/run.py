#!/usr/bin/env python3
"""One hostile client against linkedge: a keep-alive flood and a slowloris, on loopback only.

Starts its own redis-server and a release linkedge (server.threads: 1, default limits) on free
ports, then:

  keepalive  one source address (127.0.0.2) opens N connections, sends one GET /health on each
             and keeps it idle;
  slowloris  two source addresses (127.0.0.3, 127.0.0.4) open M connections between them and
             drip one request-head byte a second on each.

Every few seconds it samples what linkedge holds (linkedge_connections_open), its RSS, and the
latency of a click from another address (127.0.0.9) on a fresh connection. Every loop is bounded
in count and time.

    python3 benches/flood/run.py [--binary target/release/linkedge] [--keepalive 20000]
                                 [--slowloris 2000]
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(port, name):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def click_ms(http, path):
    """One click on a fresh connection from 127.0.0.9, with blocking sockets in the sampler's own
    thread (so the flood's event loop cannot delay it): (status, milliseconds)."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", http), timeout=10, source_address=("127.0.0.9", 0)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            line = s.makefile("rb").readline()
        status = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        status = 0
    return status, (time.monotonic() - start) * 1000


async def sample(le, http, metrics_port, path, label, samples, every, stop):
    rows = []
    for _ in range(samples):
        lat = await asyncio.to_thread(lambda: [click_ms(http, path) for _ in range(5)])
        row = {
            "t": round(time.monotonic() - stop["t0"], 1),
            "held": metric(metrics_port, "linkedge_connections_open"),
            "rss_mib": round(rss_mib(le.pid), 1),
            "click_status": sorted({s for s, _ in lat}),
            "click_ms_max": round(max(ms for _, ms in lat), 2),
            "click_ms_median": round(sorted(ms for _, ms in lat)[2], 2),
        }
        rows.append(row)
        print(label, json.dumps(row), flush=True)
        if stop.get("done"):
            break
        await asyncio.sleep(every)
    return rows


async def keepalive_flood(http, n, sources, results):
    # At most 500 connections being opened at once: the flood, not this script's event loop,
    # is what is measured.
    opening = asyncio.Semaphore(500)

    async def one(i):
        src = f"127.0.0.{2 + i % sources}" if sources > 1 else "127.0.0.2"
        await opening.acquire()
        released = False
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", http, local_addr=(src, 0)), 20
            )
            w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            line = await asyncio.wait_for(r.readline(), 20)
            code = line[9:12].decode() or "closed"
            results["status"][code] = results["status"].get(code, 0) + 1
            opening.release()
            released = True
            # Idle until the server closes (bounded).
            start = time.monotonic()
            await asyncio.wait_for(r.read(), 90)
            if code == "200":
                results["idle_held_s"].append(time.monotonic() - start)
        except (OSError, asyncio.TimeoutError):
            results["status"]["error"] = results["status"].get("error", 0) + 1
        finally:
            if not released:
                opening.release()

    await asyncio.gather(*(one(i) for i in range(n)))


async def slowloris(http, n, results):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 200

    async def one(i):
        src = "127.0.0.3" if i % 2 == 0 else "127.0.0.4"
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", http, local_addr=(src, 0)), 20
            )
        except (OSError, asyncio.TimeoutError):
            results["refused_or_error"] += 1
            return
        start = time.monotonic()
        for b in head:
            w.write(bytes([b]))
            try:
                await w.drain()
                data = await asyncio.wait_for(r.read(100), 1.0)
                if not data or data.startswith(b"HTTP/1.1 503"):
                    break
            except asyncio.TimeoutError:
                continue
            except OSError:
                break
        results["held_s"].append(time.monotonic() - start)
        w.close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/linkedge"))
    ap.add_argument("--keepalive", type=int, default=20000)
    ap.add_argument("--slowloris", type=int, default=2000)
    ap.add_argument("--sources", type=int, default=1, help="source addresses of the keep-alive flood")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="flood-")
    rport, http, https, mport = free_port(), free_port(), free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    conf = os.path.join(tmp, "linkedge.yaml")
    with open(conf, "w") as f:
        f.write(
            f"""listen: {{ http: 127.0.0.1:{http}, https: 127.0.0.1:{https}, metrics: 127.0.0.1:{mport} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{rport}/" }}
links:
  mint_key: 1
  keys: [{{ id: 1, secret_file: {ROOT}/conf/dev-keys/dev-link-key-1.txt }}]
events: {{ spool: {{ dir: {tmp}/spool }} }}
server: {{ threads: 1, pid_file: {tmp}/pid, upgrade_sock: {tmp}/upgrade.sock }}
"""
        )
    url = subprocess.check_output(
        [args.binary, "link", "mint", "--config", conf, "--host", "127.0.0.1", "--url", "https://example.com/"],
        text=True,
    ).strip()
    path = url.split("127.0.0.1", 1)[1]
    le = subprocess.Popen([args.binary, "serve", "--config", conf], stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        for _ in range(100):
            if metric(mport, "linkedge_connections_open") is not None:
                break
            time.sleep(0.1)
        print("idle", json.dumps({"rss_mib": round(rss_mib(le.pid), 1)}), flush=True)

        results = {"status": {}, "idle_held_s": []}
        stop = {"t0": time.monotonic()}
        flood = asyncio.ensure_future(keepalive_flood(http, args.keepalive, args.sources, results))
        await sample(le, http, mport, path, "keepalive", 15, 5, stop)
        try:
            await asyncio.wait_for(flood, 30)
        except asyncio.TimeoutError:
            flood.cancel()
        idle = sorted(results["idle_held_s"])
        print(
            "keepalive answers",
            json.dumps(results["status"] | {
                "idle_closed_after_s_median": round(idle[len(idle) // 2], 1) if idle else None,
                "idle_closed_after_s_max": round(idle[-1], 1) if idle else None,
            }),
            flush=True,
        )

        results = {"refused_or_error": 0, "held_s": []}
        stop = {"t0": time.monotonic()}
        drip = asyncio.ensure_future(slowloris(http, args.slowloris, results))
        await sample(le, http, mport, path, "slowloris", 8, 2, stop)
        await asyncio.wait_for(drip, 60)
        held = sorted(results["held_s"])
        print(
            "slowloris held",
            json.dumps(
                {
                    "connections": len(held),
                    "refused_or_error": results["refused_or_error"],
                    "held_s_median": round(held[len(held) // 2], 1) if held else None,
                    "held_s_max": round(held[-1], 1) if held else None,
                }
            ),
            flush=True,
        )
        print(
            "closed",
            json.dumps(
                {
                    r: metric(mport, f'linkedge_connections_closed_total{{reason="{r}"}}')
                    for r in ["header_timeout", "idle_timeout", "evicted"]
                }
                | {r: metric(mport, f'linkedge_connections_refused_total{{reason="{r}"}}') for r in ["per_ip", "global"]}
            ),
        )
    finally:
        le.terminate()
        redis.terminate()
        le.wait(10)
        redis.wait(10)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
