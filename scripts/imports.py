#!/usr/bin/env python3
"""The import graph of src/ between top-level modules (crate::<module>), its cycles, and every
import of a module listed later in src/lib.rs (lib.rs lists modules bottom-up).

    python3 scripts/imports.py        # prints the graph; exit 1 on a cycle or an upward import
"""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parent.parent / "src"
order = re.findall(r"^pub mod (\w+);", (root / "lib.rs").read_text(), re.M)
edges = {m: set() for m in order}
for path in root.rglob("*.rs"):
    rel = path.relative_to(root)
    if rel.name in ("lib.rs", "main.rs"):
        continue
    owner = rel.parts[0].removesuffix(".rs")
    text = path.read_text()
    text = re.sub(r"(?m)^\s*//.*$", "", text)  # doc links are not imports
    text = text.split("#[cfg(test)]")[0]
    for m in re.findall(r"crate::(\w+)", text):
        if m != owner and m in edges:
            edges[owner].add(m)
bad = 0
for m in order:
    ups = [d for d in edges[m] if order.index(d) > order.index(m)]
    print(f"{m:9} -> {', '.join(sorted(edges[m], key=order.index)) or '-'}")
    for d in ups:
        print(f"  UPWARD: {m} imports {d}, which lib.rs lists above it")
        bad += 1
# cycles (Tarjan)
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(c)
for v in order:
    if v not in index: visit(v)
for c in sccs:
    print("CYCLE:", " -> ".join(c)); bad += 1
print(f"{len(order)} modules, {sum(len(e) for e in edges.values())} edges, {len(sccs)} cycles, upward imports: {bad - len(sccs)}")
sys.exit(1 if bad else 0)
