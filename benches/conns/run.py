#!/usr/bin/env python3
"""What holding connections costs linkedge, and how long a hostile client can hold them, for one
or more release binaries in turn (to compare builds):

    python3 benches/conns/run.py [--idle N] [--hold S] BINARY...

For each binary, with the default limits (header_timeout 10s, keepalive_timeout 60s,
send_timeout 30s) and a fresh redis-server and linkedge on free loopback ports:
  silent-h2   how long a TLS connection that negotiated h2 and sends nothing stays open
  zero-window how long 128 streams on a connection advertising a zero window are held
              (until RST_STREAM), and how long until the connection itself closes
  rss-1000    linkedge's RSS growth with 1,000 silent h2 connections from one address
  idle-cpu    linkedge's CPU seconds per second while N idle HTTP/1 keep-alive connections
              sit between requests (the deadline checks' cost)
  evict       with max_connections = N and all N idle: new connections, each making room by
              evicting the longest-idle one; CPU microseconds and wall time per newcomer
Each wait is bounded (a connection still open at the bound is reported as "> bound").
Stdlib only; hand-written HTTP/2 frames.
"""
import argparse
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK = os.sysconf("SC_CLK_TCK")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tls_h2(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    return s


def closed_after(s, bound):
    """Seconds until the peer closes `s` (reading and discarding), or None at `bound`."""
    start = time.time()
    s.settimeout(0.5)
    while time.time() - start < bound:
        try:
            if not s.recv(65536):
                return time.time() - start
        except (socket.timeout, TimeoutError):
            continue
        except OSError:
            return time.time() - start
    return None


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def get_health(stream):
    # HPACK: :method GET (2), :scheme https (7), :path and :authority literal, not indexed.
    block = b"\x82\x87" + b"\x04\x07/health" + b"\x01\x09localhost"
    return frame(1, 0x5, stream, block)  # HEADERS, END_STREAM | END_HEADERS


def zero_window(port, streams, bound):
    """(seconds until the last stream was reset, seconds until the connection closed)."""
    s = tls_h2(port)
    start = time.time()
    s.sendall(PREFACE + frame(4, 0, 0, struct.pack(">HI", 4, 0)))  # INITIAL_WINDOW_SIZE 0
    s.sendall(b"".join(get_health(2 * i + 1) for i in range(streams)))
    s.settimeout(0.5)
    buf, resets, last_reset, acked = b"", set(), None, False
    while time.time() - start < bound:
        try:
            data = s.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except OSError:
            data = b""
        if not data:
            s.close()
            return last_reset, time.time() - start
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + length:]
            if kind == 4 and not flags & 1 and not acked:
                s.sendall(frame(4, 1, 0))
                acked = True
            if kind == 3:
                resets.add(sid)
                if len(resets) == streams:
                    last_reset = time.time() - start
    s.close()
    return last_reset, None


def fmt(v, bound):
    return f"{v:.1f} s" if v is not None else f"> {bound} s"


def measure(binary, idle_n, hold):
    work = Path(tempfile.mkdtemp(prefix="conns-bench-"))
    redis_port, http_port, https_port, metrics_port = (free_port() for _ in range(4))
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    key = work / "link-key"
    key.write_text("conns-bench-key-not-a-secret-0123456789abcdef")

    def start(extra=""):
        conf = work / "linkedge.yaml"
        conf.write_text(f"""
listen: {{ http: 127.0.0.1:{http_port}, https: 127.0.0.1:{https_port}, metrics: 127.0.0.1:{metrics_port} }}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{redis_port}/" }}
links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {key} }}] }}
events: {{ spool: {{ dir: {work}/spool }} }}
server: {{ threads: 1, pid_file: {work}/pid, upgrade_sock: {work}/upgrade.sock, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }}
{extra}""")
        p = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--config", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=open(work / "log", "a"))
        wait_port(http_port)
        wait_port(https_port)
        return p

    out = {}
    le = start()
    try:
        silent = tls_h2(https_port)
        out["silent-h2"] = fmt(closed_after(silent, 45), 45)
        silent.close()
        reset, closed = zero_window(https_port, 128, 100)
        out["zero-window"] = f"128 streams reset after {fmt(reset, 100)}, connection closed after {fmt(closed, 100)}"
        before = rss_kb(le.pid)
        held = [tls_h2(https_port) for _ in range(1000)]
        grown = rss_kb(le.pid) - before
        out["rss-1000"] = f"+{grown / 1024:.1f} MiB ({grown * 1024 / len(held):.0f} bytes per connection)"
        for s in held:
            s.close()
    finally:
        le.terminate()
        le.wait()
    # Idle HTTP/1 connections: the checks' cost, then eviction at the cap.
    le = start(f"limits: {{ max_connections: {idle_n}, max_connections_per_ip: 1000000 }}")
    try:
        conns = []
        for _ in range(idle_n):
            c = socket.create_connection(("127.0.0.1", http_port))
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        for c in conns:
            c.settimeout(10)
            if b" 200 " not in c.recv(4096):
                sys.exit("no 200 for an idle connection's request")
        time.sleep(2)
        c0, t0 = cpu_s(le.pid), time.time()
        time.sleep(hold)
        out["idle-cpu"] = f"{(cpu_s(le.pid) - c0) / (time.time() - t0) * 1000:.1f} ms CPU per s with {idle_n} idle"
        n = min(2000, idle_n)
        c0, t0 = cpu_s(le.pid), time.time()
        fresh = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", http_port))
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(10)
            if b" 200 " not in c.recv(4096):
                sys.exit("a newcomer at the cap got no 200")
            fresh.append(c)
        wall, cpu = time.time() - t0, cpu_s(le.pid) - c0
        out["evict"] = f"{n} newcomers at the cap of {idle_n}: {cpu / n * 1e6:.0f} us CPU and {wall / n * 1e3:.2f} ms wall each"
        for c in conns + fresh:
            c.close()
    finally:
        le.terminate()
        le.wait()
        redis.terminate()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=16000, help="idle HTTP/1 connections held")
    ap.add_argument("--hold", type=int, default=20, help="seconds the idle connections are held")
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.idle + 3000 > hard:
        sys.exit(f"--idle {a.idle} needs {a.idle + 3000} descriptors; the hard limit is {hard}")
    for b in a.binaries:
        print(f"== {b}", flush=True)
        for k, v in measure(b, a.idle, a.hold).items():
            print(f"  {k:12} {v}", flush=True)


if __name__ == "__main__":
    main()
