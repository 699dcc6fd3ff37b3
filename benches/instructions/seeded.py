#!/usr/bin/env python3
"""Instructions per click with no block rules against N loaded (none matching the click), and
the functions whose cost differs most: what BENCHMARKS.md's "Block list" instruction figures
come from. Needs a release build and valgrind.

    python3 benches/instructions/seeded.py [N] [CLICKS]     (defaults 100000 3000)
"""
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

n = sys.argv[1] if len(sys.argv) > 1 else "100000"
clicks = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
# No re-sync inside the count, and the initial load finished before it starts.
os.environ["EXTRA_YAML"] = "blocks: { resync_interval: 3600s }"
os.environ.setdefault("SETTLE_S", "40")
res = {}
for seed in ("0", n):
    os.environ["SEED_BLOCKS"] = seed
    res[seed] = run.measure(str(run.ROOT / "target/release/linkedge"), "click", clicks,
                            Path(tempfile.mkdtemp(prefix="linkedge-seeded-")))
(p0, c0), (p1, c1) = res["0"], res[n]
print(f"click: {p0:.0f} instructions with no rules, {p1:.0f} with {n}: {p1 - p0:+.0f} "
      f"({(p1 / p0 - 1) * 100:+.1f}%); largest changes per click:")
for k in sorted(set(c0) | set(c1), key=lambda k: -abs(c1.get(k, 0) - c0.get(k, 0)))[:15]:
    print(f"  {(c1.get(k, 0) - c0.get(k, 0)) / clicks:+8.0f}  {k[-110:]}")
