"""RESP for `redis-cli --pipe`: N registry records (HSET linkedge:domains), half us, half eu."""
import sys, json
n = int(sys.argv[1])
out = sys.stdout.buffer
def resp(*args):
    b = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        b.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(b)
for i in range(n):
    host = f"d{i}.bulk.example"
    d = {"host": host, "workspace": 1, "region": "us" if i % 2 == 0 else "eu", "state": "pending",
         "error": "", "created_ms": 0, "updated_ms": 0}
    out.write(resp("HSET", "linkedge:domains", host, json.dumps(d, separators=(",", ":"))))
