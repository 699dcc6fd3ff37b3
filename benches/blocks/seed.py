#!/usr/bin/env python3
"""Writes N block rules into a Redis as `linkedge block add` stores them (a mix: 40% host,
20% subdomains, 20% exact URL, 10% prefix, 5% workspace, 5% message), through redis-cli --pipe.

    python3 benches/blocks/seed.py PORT N [PREFIX]
"""
import json
import subprocess
import sys


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def rule(i):
    kind = i % 20
    base = {"id": f"b{i:016x}", "action": "block" if i % 3 else "warn", "reason": "bench rule",
            "added_by": "bench", "created_ms": 1_790_000_000_000 + i}
    if kind < 8:
        base.update({"match": "host", "host": f"h{i}.bad{i % 997}.example"})
    elif kind < 12:
        base.update({"match": "subdomains", "host": f"s{i}.bad{i % 991}.example"})
    elif kind < 16:
        base.update({"match": "url", "url": f"https://u{i % 5003}.bad.example/p/{i}?x=1"})
    elif kind < 18:
        base.update({"match": "prefix", "prefix": f"https://p{i % 1009}.bad.example/share/{i}/"})
    elif kind < 19:
        base.update({"match": "workspace", "workspace": 1_000_000 + i})
    else:
        base.update({"match": "message", "workspace": 7, "message": 1_000_000 + i})
    return base


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else "linkedge:"
    key = f"{prefix}{{blocks}}"
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL)
    batch = []
    for i in range(n):
        r = rule(i)
        batch += [r["id"], json.dumps(r, separators=(",", ":"))]
        if len(batch) >= 2000:
            p.stdin.write(resp("HSET", key, *batch))
            batch = []
    if batch:
        p.stdin.write(resp("HSET", key, *batch))
    p.stdin.close()
    p.wait()


if __name__ == "__main__":
    main()
