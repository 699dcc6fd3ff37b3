#!/usr/bin/env python3
"""Load benchmark: linkedge against nginx and Caddy on the same machine, in one run.

Started by benches/load/run.sh (which installs the tools and builds linkedge in release mode).
Every server gets one worker pinned to core 0; the load generator and the shared upstream run on
core 1. Scenarios alternate servers (A B C A B C) and report the mean of the rounds. A scenario
with socket errors or unexpected status codes is refused, not reported.
"""
import argparse
import atexit
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "benches" / "load"
CLK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
LOAD_CORE = "1"
# Clicks carry a browser's User-Agent, as a person's do: linkedge's machine-click verdict then
# takes its common path (the user agent remembered per thread, not matched again).
BROWSER_UA = ("User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(text, **kw):
    for k, v in kw.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def wait_port(port, what, proc=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited at start (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def proc_pids(root_pid):
    """The process and its children (nginx master + worker)."""
    pids = [root_pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == root_pid:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / CLK


def context_switches(pids):
    """Voluntary and involuntary context switches of every thread of the processes so far."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def peak_rss_kb(pids):
    best = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best


class Server:
    def __init__(self, name, cmd, port, env=None, cwd=None):
        self.name, self.cmd, self.port = name, cmd, port
        log = open(WORK / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE] + cmd, stdout=log, stderr=log,
            env={**os.environ, **(env or {})}, cwd=cwd)
        wait_port(port, name, self.proc)
        self.pids = proc_pids(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def to_seconds(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[unit]


def run_wrk(url, seconds, conns=64, headers=()):
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    res = {"raw": out}
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    res["p50"], res["p99"] = to_seconds(lat["50"]), to_seconds(lat["99"])
    res["max"] = to_seconds(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = (errs.group(1) if errs else "") + (f" non-2xx/3xx {non2xx.group(1)}" if non2xx else "")
    return res


def run_h2load(url, seconds, conns=4, streams=64):
    log = WORK / "h2load-requests.tsv"
    cmd = ["taskset", "-c", LOAD_CORE, "h2load", "-c", str(conns), "-m", str(streams),
           "-D", str(seconds), "--warm-up-time", "1", f"--log-file={log}", url]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    res = {"raw": out}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    res["requests"] = int(m.group(4)) if m else 0
    failed = (int(m.group(5)) + int(m.group(6))) if m else 1
    st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    bad = (int(st.group(3)) + int(st.group(4))) if st else 1
    res["errors"] = "" if failed == 0 and bad == 0 else f"failed {failed}, 4xx/5xx {bad}"
    # Percentiles from h2load's per-request log (start µs, status, µs to the end of the response).
    took = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines()
                  if line.count("\t") >= 2) if log.exists() else []
    if took:
        pick = lambda q: took[min(int(len(took) * q), len(took) - 1)] / 1e6
        res["p50"], res["p99"], res["max"] = pick(0.50), pick(0.99), took[-1] / 1e6
    else:
        res["p50"] = res["p99"] = res["max"] = None
    log.unlink(missing_ok=True)
    return res


def run_handshakes(port, seconds, concurrency=64, sni_file=None, groups="X25519"):
    """Full TLS handshakes: examples/hsload opens a new connection and a new TLS session (no
    resumption offered) for every request. Key exchange X25519 by default, the group every
    server here negotiates (Debian's nginx and Caddy have no post-quantum hybrid); groups=None
    offers the client's default, X25519MLKEM768 first, as current browsers do."""
    cmd = ["taskset", "-c", LOAD_CORE, str(ROOT / "target/release/examples/hsload"),
           f"127.0.0.1:{port}", "--seconds", str(seconds), "--concurrency", str(concurrency)]
    cmd += ["--sni-file", str(sni_file)] if sni_file else ["--sni", "localhost"]
    cmd += ["--groups", groups] if groups else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    errors = ""
    if r["errors"]:
        errors = f"{r['errors']} failed handshakes ({r['first_error']})"
    if r["resumed"]:
        errors += f" {r['resumed']} resumed handshakes"
    return {"raw": out, "requests": r["handshakes"], "rps": r["per_second"], "p50": r.get("p50"),
            "p99": r.get("p99"), "max": r.get("max"), "errors": errors.strip()}


# Scenario 7's mix: 60% h2 (browsers), 25% HTTP/1.1 over TLS (link scanners), 15% plain HTTP.
MIX = "h2:60,h1:25,http:15"
MIX_RESUME = 30
MIX_CONCURRENCY = 64
MIX_LINKS = 20000


def mix_paths(token, n=MIX_LINKS):
    """n distinct click links for Host localhost, minted with the bench key by the Python minting
    client (clients/python), written once to a file of paths; its path."""
    out = WORK / "mix-paths.txt"
    if not out.exists():
        sys.path.insert(0, str(ROOT / "clients" / "python"))
        from linkedge_links import Minter
        m = Minter(1, (WORK / "bench-link-key").read_text())
        lines = []
        for i in range(n):
            u = m.click("localhost", f"https://shop.example.com/p/{i}?utm_source=newsletter&utm_medium=email",
                        workspace=7, message=1000 + i // 20, link=i % 20)
            lines.append("/c/" + u.rsplit("/", 1)[1])
        out.write_text("\n".join(lines) + "\n")
    return out


def run_mix(tls_port, http_port, seconds, paths, groups=None):
    """Scenario 7: examples/hsload's click mix (key-exchange groups: the client's default, or
    `groups`); the client's own CPU seconds with it."""
    cmd = ["taskset", "-c", LOAD_CORE, str(ROOT / "target/release/examples/hsload"),
           f"127.0.0.1:{tls_port}", "--http", f"127.0.0.1:{http_port}", "--seconds", str(seconds),
           "--concurrency", str(MIX_CONCURRENCY), "--sni", "localhost", "--mix", MIX,
           "--resume-share", str(MIX_RESUME), "--paths", str(paths)]
    cmd += ["--groups", groups] if groups else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(out.strip().splitlines()[-1])
    errors = f"{r['errors']} failed clicks ({r['first_error']})" if r["errors"] else ""
    return {"raw": out, "requests": r["clicks"], "rps": r["per_second"], "p50": r.get("p50"),
            "p99": r.get("p99"), "max": r.get("max"), "errors": errors, "resumed": r["resumed"],
            "offered": r["offered"], "kinds": r["kinds"],
            "client_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def mix_summary(per):
    """Scenario 7 per server: clicks per CPU-second of the server's core, the client's CPU per
    second of load, sessions resumed of those offered, and the kinds served."""
    out = {}
    for name, runs in per.items():
        cpu = sum(r["cpu_s"] for r in runs)
        secs = sum(r["requests"] / r["rps"] for r in runs if r["rps"])
        out[name] = {"clicks_per_core_s": sum(r["requests"] for r in runs) / cpu if cpu else None,
                     "client_cpu_share": sum(r["client_cpu_s"] for r in runs) / secs if secs else None,
                     "server_cpu_share": cpu / secs if secs else None,
                     "resumed": sum(r["resumed"] for r in runs), "offered": sum(r["offered"] for r in runs),
                     "kinds": {k: sum(r["kinds"][k] for r in runs) for k in runs[0]["kinds"]}}
    return out


def mix_events(ports, served0, xlen0):
    """linkedge's 302s on clicks during scenario 7 against the events its writer added to the
    stream, once its queue and spool are empty (at most 30 s)."""
    m = ports["le_metrics"]
    settle = time.time()
    while time.time() - settle < 30 and (metric(m, 'linkedge_event_queue_depth{sink="default"}') > 0
                                         or metric(m, 'linkedge_event_spool_bytes{sink="default"}') > 0):
        time.sleep(0.1)
    served = int(metric(m, 'linkedge_requests_total{route="click",status="302"}') - served0)
    events = int(redis_cli(ports["redis"], "XLEN", "linkedge:events") or 0) - xlen0
    print(f"  linkedge served {served} click redirects; {events} events added to the stream", flush=True)
    return {"served_302": served, "events": events}


def start_redis(work, name):
    """A throwaway redis-server on a free port (load core, nothing persisted), stopped at exit;
    its port."""
    port = free_port()
    p = subprocess.Popen(["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(port),
                          "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(work)], stdout=subprocess.DEVNULL)
    atexit.register(p.terminate)
    wait_port(port, f"redis {name}", p)
    return port


def metric(port, series):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def measure(server, fn):
    pids = proc_pids(server.proc.pid)
    c0, cs0 = cpu_seconds(pids), context_switches(pids)
    res = fn()
    res["cpu_s"] = cpu_seconds(pids) - c0
    res["cs_per_1k"] = (context_switches(pids) - cs0) / max(res["requests"], 1) * 1000
    res["cpu_s_per_10k"] = res["cpu_s"] / max(res["requests"], 1) * 10_000
    res["peak_rss_kb"] = peak_rss_kb(pids)
    if not res.get("errors"):
        res.pop("raw", None)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run (>= 10)")
    ap.add_argument("--rounds", type=int, default=2, help="A B C rounds per scenario")
    ap.add_argument("--scenarios", default="1,2,3,4,5,7,6")
    ap.add_argument("--sustain", type=int, default=60, help="seconds of scenario 6")
    ap.add_argument("--binary", default=str(ROOT / "target/release/linkedge"))
    ap.add_argument("--domains", type=int, default=10000,
                    help="certificates in linkedge's store for scenario 3 (SNI spread across them)")
    ap.add_argument("--register", type=int, default=100000,
                    help="domains registered in linkedge's registry (Redis) for the memory figure")
    ap.add_argument("--extra-yaml", default="",
                    help="more top-level config for linkedge, e.g. 'access_log: { to: \"{work}/access.log\" }' "
                         "({work}: the run's scratch directory)")
    ap.add_argument("--server-extra", default="",
                    help="more keys for linkedge's server section, e.g. 'grace_period_seconds: 1,'")
    ap.add_argument("--floor", default=str(ROOT / "target/release/examples/floor"),
                    help="examples/floor build: scenario 1 also runs Pingora answering a fixed 302 from "
                         "request_filter (pingora-proxy) and from an HttpServerApp (pingora-app), the "
                         "floor under linkedge, and a bare tokio + httparse server (tokio-raw); "
                         "scenario 5 runs Pingora proxying with no hook (pingora-pass) "
                         "(skipped if the file is missing)")
    args = ap.parse_args()
    scenarios = [int(s) for s in args.scenarios.split(",")]
    if 7 in scenarios and 6 in scenarios and scenarios.index(7) > scenarios.index(6):
        sys.exit("--scenarios: put 7 before 6 (6 empties the events stream that 7 counts)")

    global WORK
    WORK = Path(tempfile.mkdtemp(prefix="linkedge-bench-"))
    ports = {k: free_port() for k in ["redis", "upstream", "le_http", "le_https", "le_metrics",
                                       "nx_http", "nx_https", "nx_hs", "cd_http", "cd_https", "cd_hs",
                                       "fp_http", "fa_http", "fr_http", "fs_http",
                                       "nx_mix_http", "nx_mix_https"]}
    started = []
    floor_procs = []  # examples/floor processes: stopped with SIGINT (no short grace period)
    try:
        redis = subprocess.Popen(["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(ports["redis"]),
                                  "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", str(WORK)], stdout=subprocess.DEVNULL)
        started.append(redis)
        wait_port(ports["redis"], "redis-server", redis)

        (WORK / "upstream.conf").write_text(fill((HERE / "upstream.conf").read_text(),
                                                  dir=WORK, upstream_port=ports["upstream"]))
        up = subprocess.Popen(["taskset", "-c", LOAD_CORE, "nginx", "-p", str(WORK), "-c",
                               str(WORK / "upstream.conf")], stderr=subprocess.DEVNULL)
        started.append(up)
        wait_port(ports["upstream"], "upstream nginx", up)

        key = WORK / "bench-link-key"
        key.write_text("bench-link-key-not-a-secret-0123456789abcdef")
        (WORK / "bench-master-key").write_text("ab" * 32)
        (WORK / "linkedge.yaml").write_text(f"""
listen:
  http: 127.0.0.1:{ports['le_http']}
  https: 127.0.0.1:{ports['le_https']}
  metrics: 127.0.0.1:{ports['le_metrics']}
tls: {{ cert: {ROOT}/certs-dev/leaf.pem, key: {ROOT}/certs-dev/leaf.key }}
redis: {{ url: "redis://127.0.0.1:{ports['redis']}/" }}
links:
  mint_key: 1
  keys: [{{ id: 1, secret_file: {key} }}]
events:
  spool: {{ dir: {WORK}/spool, max_bytes: 1GiB }}
server: {{ threads: 1, {args.server_extra} pid_file: {WORK}/le.pid, upgrade_sock: {WORK}/le.sock }}
certs:
  master_key: 1
  master_keys: [{{ id: 1, secret_file: {WORK}/bench-master-key }}]
  cache_size: {args.domains}
  fallback: true
regions:
  us:
    backends: [{{ addr: "127.0.0.1:{ports['upstream']}" }}]
routing: {{ default_region: us }}
""" + args.extra_yaml.replace("{work}", str(WORK)) + "\n")
        link = subprocess.run([args.binary, "link", "mint", "--config", str(WORK / "linkedge.yaml"),
                               "--host", "127.0.0.1", "--url", "https://example.com/landing"],
                              capture_output=True, text=True, check=True).stdout.strip()
        token = link.rsplit("/", 1)[1]
        le = Server("linkedge", [args.binary, "serve", "--config", str(WORK / "linkedge.yaml")],
                    ports["le_http"], env={"RUST_LOG": "warn"})
        wait_port(ports["le_https"], "linkedge https")
        started.append(le.proc)

        (WORK / "nginx.conf").write_text(fill((HERE / "nginx.conf").read_text(), dir=WORK, root=ROOT,
                                              upstream_port=ports["upstream"], http_port=ports["nx_http"],
                                              https_port=ports["nx_https"], handshake_port=ports["nx_hs"],
                                              mix_http_port=ports["nx_mix_http"],
                                              mix_https_port=ports["nx_mix_https"]))
        nx = Server("nginx", ["nginx", "-p", str(WORK), "-c", str(WORK / "nginx.conf")], ports["nx_http"])
        started.append(nx.proc)

        (WORK / "Caddyfile").write_text(fill((HERE / "Caddyfile").read_text(), root=ROOT,
                                             upstream_port=ports["upstream"], http_port=ports["cd_http"],
                                             https_port=ports["cd_https"], handshake_port=ports["cd_hs"]))
        cd = Server("caddy", ["caddy", "run", "--config", str(WORK / "Caddyfile"), "--adapter", "caddyfile"],
                    ports["cd_http"], env={"GOMAXPROCS": "1", "HOME": str(WORK), "XDG_DATA_HOME": str(WORK),
                                           "XDG_CONFIG_HOME": str(WORK)})
        started.append(cd.proc)

        servers = {"linkedge": (le, "le"), "nginx": (nx, "nx"), "caddy": (cd, "cd")}
        floors = {}
        if 1 in scenarios and Path(args.floor).exists():
            for name, kind, p in (("pingora-proxy", "proxy", "fp"), ("pingora-app", "app", "fa"),
                                  ("tokio-raw", "raw", "fr")):
                f = Server(name, [args.floor, kind, f"127.0.0.1:{ports[p + '_http']}"], ports[p + "_http"])
                started.append(f.proc)
                floor_procs.append(f.proc)
                floors[name] = (f, p)
        pass_floor = {}
        if 5 in scenarios and Path(args.floor).exists():
            f = Server("pingora-pass", [args.floor, "pass", f"127.0.0.1:{ports['fs_http']}",
                                        f"127.0.0.1:{ports['upstream']}"], ports["fs_http"])
            started.append(f.proc)
            floor_procs.append(f.proc)
            pass_floor["pingora-pass"] = (f, "fs")
        names = WORK / "names.txt"
        if 3 in scenarios:
            print(f"\n== storing {args.domains} domains' certificates in linkedge's store and "
                  f"registering {args.register} domains", flush=True)
            subprocess.run([str(ROOT / "target/release/examples/seed_certs"), "--config",
                            str(WORK / "linkedge.yaml"), "--count", str(args.domains),
                            "--register", str(args.register), "--names-out", str(names)], check=True)
            # linkedge's registry mirror loads what was just registered in the background, on the
            # server core: let it finish before anything is measured (at most 120 s).
            registered = int(redis_cli(ports["redis"], "HLEN", "linkedge:domains") or 0)
            deadline = time.time() + 120
            while (metric(ports["le_metrics"], "linkedge_registry_domains") < registered
                   and time.time() < deadline):
                time.sleep(0.5)
            print(f"  linkedge's registry mirror holds "
                  f"{metric(ports['le_metrics'], 'linkedge_registry_domains'):.0f} domains", flush=True)
        d = args.duration

        def url(prefix, kind, path):
            scheme = "https" if kind != "http" else "http"
            return f"{scheme}://127.0.0.1:{ports[prefix + '_' + kind]}{path}"

        plans = {
            1: ("HTTP/1.1 keep-alive click redirects, 64 connections",
                lambda p: run_wrk(url(p, "http", f"/c/{token}"), d, headers=(BROWSER_UA,))),
            2: ("HTTPS HTTP/1.1 keep-alive click redirects, 64 connections",
                lambda p: run_wrk(url(p, "https", f"/c/{token}"), d, headers=(BROWSER_UA,))),
            3: (f"Full TLS handshakes per second (new connection and session per request, ECDSA P-256, "
                f"X25519; linkedge: SNI spread over {args.domains} domains' certificates from its store, "
                f"linkedge-1cert: one name; nginx, Caddy: one static certificate; linkedge-pq: as linkedge "
                f"with the client's default groups, which negotiate X25519MLKEM768 with linkedge only)",
                lambda p: run_handshakes(ports[("le" if p in ("le1", "lepq") else p)
                                               + ("_https" if p in ("le", "le1", "lepq") else "_hs")],
                                         d, sni_file=names if p in ("le", "lepq") else None,
                                         groups=None if p == "lepq" else "X25519")),
            4: ("HTTP/2 over TLS, 4 connections x 64 streams (h2load)",
                lambda p: run_h2load(url(p, "https", f"/c/{token}"), d)),
            5: ("Requests proxied to a local upstream, 64 connections",
                lambda p: run_wrk(url(p, "http", "/proxied/page"), d)),
            7: (f"The click mix: every click a new connection and one GET of a distinct link, "
                f"{MIX} ({MIX_RESUME}% of TLS connections offer an earlier session), the client's "
                f"default groups (X25519MLKEM768 with linkedge; Debian's nginx has only X25519; "
                f"linkedge-x25519: linkedge offered X25519 only, like nginx), {MIX_CONCURRENCY} clients; "
                f"nginx writes an access log, linkedge records every click",
                lambda p: run_mix(ports["nx_mix_https" if p == "nx" else "le_https"],
                                  ports["nx_mix_http" if p == "nx" else "le_http"], d, mix_paths(token),
                                  groups="X25519" if p == "lex" else None)),
        }
        results = {"machine": machine(), "duration_s": d, "rounds": args.rounds, "scenarios": {}}
        for sc in [s for s in scenarios if s in plans]:
            title, fn = plans[sc]
            print(f"\n== scenario {sc}: {title}", flush=True)
            group = dict(servers)
            if sc == 1:
                group.update(floors)
            if sc == 5:
                group.update(pass_floor)
            if sc == 7:
                group = {"linkedge": (le, "le"), "nginx": (nx, "nx"), "linkedge-x25519": (le, "lex")}
                served0 = metric(ports["le_metrics"], 'linkedge_requests_total{route="click",status="302"}')
                xlen0 = int(redis_cli(ports["redis"], "XLEN", "linkedge:events") or 0)
            if sc == 3:
                group = {"linkedge": (le, "le"), "linkedge-1cert": (le, "le1"), "linkedge-pq": (le, "lepq"),
                         "nginx": (nx, "nx"),
                         "caddy": (cd, "cd")}
                hs0 = {k: metric(ports["le_metrics"], f'linkedge_tls_handshakes_total{{resumed="{k}"}}')
                       for k in ("true", "false")}
                # Warm-up: one pass over every name fills linkedge's certificate cache.
                run_handshakes(ports["le_https"], 3, sni_file=names)
            per = {n: [] for n in group}
            for name, (srv, p) in group.items():  # warm-up
                run_wrk(url("le" if p == "lex" else p, "http", "/health"), 2) if sc != 3 else None
            for r in range(args.rounds):
                for name, (srv, p) in group.items():
                    res = measure(srv, lambda: fn(p))
                    print(f"  round {r + 1} {name:9} {res['rps']:>10.0f} req/s  cpu {res['cpu_s']:.1f}s"
                          f"  {('ERRORS: ' + res['errors']) if res['errors'] else ''}", flush=True)
                    per[name].append(res)
            results["scenarios"][sc] = {"title": title, "runs": per, "summary": summarize(per)}
            if sc == 7:
                results["scenarios"][sc]["mix"] = mix_summary(per)
                results["scenarios"][sc]["events"] = mix_events(ports, served0, xlen0)
            if sc == 3:
                results["memory"] = {
                    "registered_domains": int(redis_cli(ports["redis"], "HLEN", "linkedge:domains") or 0),
                    "certificates_cached": int(metric(ports["le_metrics"], "linkedge_cert_cache_entries")),
                    "linkedge_peak_rss_kb": peak_rss_kb(le.pids),
                }
                reuse = handshake_reuse()
                for k in ("true", "false"):
                    reuse["linkedge_" + ("resumed" if k == "true" else "full")] = int(
                        metric(ports["le_metrics"], f'linkedge_tls_handshakes_total{{resumed="{k}"}}') - hs0[k])
                reuse["linkedge_cert_lookups"] = {
                    src: metric(ports["le_metrics"], f'linkedge_cert_lookups_total{{source="{src}"}}')
                    for src in ("memory", "redis", "negative", "fallback")}
                results["scenarios"][sc]["reuse"] = reuse
            if sc == 5:
                # The same load straight to the upstream, and linkedge's upstream connection reuse.
                direct = [run_wrk(f"http://127.0.0.1:{ports['upstream']}/proxied/page", d)
                          for _ in range(args.rounds)]
                results["scenarios"][sc]["direct_rps"] = sum(r["rps"] for r in direct) / len(direct)
                reused = metric(ports["le_metrics"], 'linkedge_upstream_connections_total{reused="true"}')
                new = metric(ports["le_metrics"], 'linkedge_upstream_connections_total{reused="false"}')
                results["scenarios"][sc]["reuse_ratio"] = reused / max(reused + new, 1)
                print(f"  direct to upstream {results['scenarios'][sc]['direct_rps']:.0f} req/s; "
                      f"linkedge upstream connection reuse {reused:.0f}/{reused + new:.0f}", flush=True)

        if 6 in scenarios:
            results["scenarios"][6] = sustained(le, ports, token, results, args.sustain)

        out = HERE / "results" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps(results, indent=1, default=str))
        table = render(results)
        print("\n" + table)
        print(f"raw results: {out.relative_to(ROOT)}")
        (HERE / "results" / "latest.md").write_text(table + "\n")
    finally:
        for p in started[::-1]:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p in floor_procs else signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(WORK, ignore_errors=True)


def handshake_reuse():
    """Full vs resumed handshakes as nginx saw them ('.' full, 'r' resumed)."""
    log = WORK / "nginx-handshakes.log"
    marks = log.read_text().split() if log.exists() else []
    return {"nginx_full": marks.count("."), "nginx_resumed": marks.count("r")}


def summarize(per):
    out = {}
    for name, runs in per.items():
        if any(r["errors"] for r in runs):
            out[name] = {"refused": "; ".join(r["errors"] for r in runs if r["errors"])}
            continue
        mean = lambda k: (sum(r[k] for r in runs) / len(runs)) if all(r.get(k) is not None for r in runs) else None
        out[name] = {k: mean(k) for k in ["rps", "p50", "p99", "max", "cpu_s_per_10k", "cs_per_1k"]}
        out[name]["peak_rss_kb"] = max(r["peak_rss_kb"] for r in runs)
        out[name]["cpu_s"] = sum(r["cpu_s"] for r in runs)
    return out


# linkedge's default limits.keepalive_requests (src/config/file.rs).
KEEPALIVE_REQUESTS = 10_000


def sustained(le, ports, token, results, seconds):
    """60 s at scenario 1's rate; then events in the stream against 302s served."""
    rate = results["scenarios"].get(1, {}).get("summary", {}).get("linkedge", {}).get("rps") or 20000
    rate = int(rate * 0.9)
    print(f"\n== scenario 6: {seconds} s sustained at {rate} req/s (90% of scenario 1), then count events",
          flush=True)
    m = ports["le_metrics"]
    # The stream is capped (events.maxlen, 10 million by default) and the earlier scenarios have
    # filled much of it: counting new entries with XLEN would stop at the cap. Start from an empty
    # stream once the writer has caught up with the earlier load.
    settle = time.time()
    while time.time() - settle < 30 and (metric(m, 'linkedge_event_queue_depth{sink="default"}') > 0
                                         or metric(m, 'linkedge_event_spool_bytes{sink="default"}') > 0):
        time.sleep(0.1)
    redis_cli(ports["redis"], "DEL", "linkedge:events")
    served0 = metric(m, 'linkedge_requests_total{route="click",status="302"}')
    xlen0 = int(redis_cli(ports["redis"], "XLEN", "linkedge:events") or 0)
    # linkedge closes a keep-alive connection after limits.keepalive_requests (10,000 by default)
    # and h2load does not reconnect: enough connections that none reaches the limit, or the load
    # would stop at 64 x 10,000 requests (runs before 2026-12-01 03:50 with that limit did).
    conns = max(64, math.ceil(rate * seconds / (KEEPALIVE_REQUESTS * 0.9)))
    per_conn = max(rate // conns, 1)
    cmd = ["taskset", "-c", LOAD_CORE, "h2load", "--h1", "-c", str(conns), "--rps", str(per_conn), "-D",
           str(seconds), f"http://127.0.0.1:{ports['le_http']}/c/{token}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    end = time.time()
    served = metric(m, 'linkedge_requests_total{route="click",status="302"}') - served0
    lag = None
    while time.time() - end < 30:
        xlen = int(redis_cli(ports["redis"], "XLEN", "linkedge:events")) - xlen0
        if xlen >= served:
            lag = time.time() - end
            break
        time.sleep(0.01)
    xlen = int(redis_cli(ports["redis"], "XLEN", "linkedge:events")) - xlen0
    dropped = metric(m, 'linkedge_events_dropped_total{reason="spool_full",sink="default"}')
    res = {"title": f"{seconds} s sustained at {rate} req/s over {conns} connections: events in the "
                    f"stream vs 302s served",
           "target_rps": rate, "achieved_rps": served / seconds, "connections": conns,
           "served_302": int(served), "events": xlen, "lost": int(served) - xlen,
           "dropped": dropped, "writer_lag_s": lag,
           "h2load": re.search(r"finished in .*", out).group(0) if "finished in" in out else out[-500:]}
    print(f"  served {int(served)} redirects ({served / seconds:.0f} req/s), stream holds {xlen} events, "
          f"writer lag {lag}", flush=True)
    return res


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_kb": int(mem), "kernel": os.uname().release,
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "caddy": subprocess.run(["caddy", "version"], capture_output=True, text=True).stdout.strip()}


def fmt_s(v):
    if v is None:
        return "-"
    return f"{v * 1000:.2f} ms" if v >= 0.001 else f"{v * 1e6:.0f} µs"


def render(results):
    lines = ["| scenario | server | req/s | p50 | p99 | max | CPU s / 10k req | context switches / 1k req | peak RSS | vs nginx | vs Caddy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sc, data in results["scenarios"].items():
        if int(sc) == 6:
            continue
        s = data["summary"]
        for name in [n for n in ["linkedge", "linkedge-1cert", "linkedge-pq", "linkedge-x25519", "pingora-proxy", "pingora-app",
                                 "tokio-raw", "pingora-pass", "nginx", "caddy"] if n in s]:
            r = s.get(name, {})
            if "refused" in r:
                lines.append(f"| {sc} | {name} | refused: {r['refused']} | | | | | | | | | |")
                continue
            cs = f"{r['cs_per_1k']:.1f}" if r.get("cs_per_1k") is not None else ""
            ratio = lambda other: (f"{r['rps'] / s[other]['rps']:.2f}×"
                                   if name.startswith(("linkedge", "pingora", "tokio")) and s.get(other, {}).get("rps")
                                   else "")
            lines.append(f"| {sc} | {name} | {r['rps']:.0f} | {fmt_s(r['p50'])} | {fmt_s(r['p99'])} | "
                         f"{fmt_s(r['max'])} | {r['cpu_s_per_10k']:.3f} | {cs} | {r['peak_rss_kb'] / 1024:.1f} MiB | "
                         f"{ratio('nginx')} | {ratio('caddy')} |")
        if "mix" in data:
            for name, mx in data["mix"].items():
                kinds = ", ".join(f"{k} {v}" for k, v in mx["kinds"].items())
                nx_core = data["mix"].get("nginx", {}).get("clicks_per_core_s")
                vs = (f" ({mx['clicks_per_core_s'] / nx_core:.2f}× nginx's)"
                      if name != "nginx" and nx_core and mx["clicks_per_core_s"] else "")
                lines.append(f"| {sc} | ({name}) | {mx['clicks_per_core_s']:.0f} clicks per CPU-second of "
                             f"its core{vs}; its core busy {mx['server_cpu_share'] * 100:.0f}%, the client's "
                             f"{mx['client_cpu_share'] * 100:.0f}%; {mx['resumed']} of {mx['offered']} offered "
                             f"sessions resumed; {kinds} | | | | | | | | |")
            ev = data.get("events")
            if ev:
                lines.append(f"| {sc} | (linkedge events) | {ev['served_302']} click redirects served, "
                             f"{ev['events']} events in the stream | | | | | | | | |")
        if "direct_rps" in data:
            lines.append(f"| {sc} | (upstream direct) | {data['direct_rps']:.0f} | | | | | | | | |")
            lines.append(f"| {sc} | (linkedge pool reuse) | {data['reuse_ratio'] * 100:.2f}% of upstream "
                         f"requests on a reused connection | | | | | | | | |")
        if "reuse" in data:
            ru = data["reuse"]
            lines.append(f"| {sc} | (nginx saw) | {ru['nginx_full']} full, {ru['nginx_resumed']} resumed "
                         f"handshakes | | | | | | | | |")
            lines.append(f"| {sc} | (linkedge saw) | {ru['linkedge_full']} full, {ru['linkedge_resumed']} "
                         f"resumed handshakes; certificate look-ups {ru['linkedge_cert_lookups']} | | | | | | | | |")
    if "memory" in results:
        m = results["memory"]
        lines.append("")
        lines.append(f"Memory: linkedge peak RSS {m['linkedge_peak_rss_kb'] / 1024:.1f} MiB with "
                     f"{m['registered_domains']} domains registered and {m['certificates_cached']} "
                     f"certificates cached.")
    if 6 in results["scenarios"] or "6" in results["scenarios"]:
        r = results["scenarios"].get(6) or results["scenarios"]["6"]
        lag = "never caught up in 30 s" if r["writer_lag_s"] is None else f"{r['writer_lag_s']:.2f} s"
        lines.append("")
        lines.append(f"Scenario 6 ({r['title']}): {r['served_302']} redirects served "
                     f"({r.get('achieved_rps', 0):.0f} req/s), {r['events']} events in "
                     f"the stream, {r['lost']} not in the stream 30 s after the load (spooled or queued, not "
                     f"dropped), {int(r['dropped'])} dropped, writer lag at the end {lag}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
