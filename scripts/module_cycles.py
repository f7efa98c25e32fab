"""Finds module cycles in one crate, from `cargo modules dependencies` output (DOT) on stdin.

cargo-modules' own `--acyclic` checks the graph of items, where a type and its own methods
already form a cycle; this check collapses every item into the module that defines it and looks
for cycles among modules over "uses" edges ("owns" edges are the module tree, not dependencies).
A child module using its parent's items is fine as long as the parent uses nothing of the child's
in return. Exits 1 and prints each cycle, with the uses that make it, when there is one.

What a module uses is what its `use` declarations import and what its own items (functions,
types, constants) name. Methods are left out as sources: cargo-modules files a method under its
type's path, not under the module whose `impl` block holds it (the use cases are `impl Keygate`
blocks in `services/*.rs`, beside their inputs), so their edges would be drawn from the wrong
module. The crates' style is to import at the top of a file, which those `use` edges cover.
"""

import re
import sys
from collections import defaultdict

NODE = re.compile(r'^\s*"([^"]+)" \[label="[^"]*"[^\]]*\]; // "([^"]+)" node')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="(uses|owns)"')


def main() -> int:
    crate = sys.argv[1] if len(sys.argv) > 1 else "crate"
    modules, kinds, edges = set(), {}, []
    for line in sys.stdin:
        if m := EDGE.match(line):
            if m.group(3) == "uses":
                edges.append((m.group(1), m.group(2)))
        elif m := NODE.match(line):
            kinds[m.group(1)] = m.group(2)
            if m.group(2) in ("mod", "crate"):
                modules.add(m.group(1))
    if not modules:
        print(f"{crate}: no modules in the graph (did cargo modules fail?)", file=sys.stderr)
        return 2

    def module_of(path: str) -> str | None:
        best = None
        for m in modules:
            if (path == m or path.startswith(m + "::")) and (best is None or len(m) > len(best)):
                best = m
        return best

    graph, why = defaultdict(set), defaultdict(list)
    def is_associated(path: str) -> bool:
        parent = path.rpartition("::")[0]
        return parent in kinds and parent not in modules

    for a, b in edges:
        if is_associated(a):
            continue
        ma, mb = module_of(a), module_of(b)
        if ma and mb and ma != mb:
            graph[ma].add(mb)
            why[(ma, mb)].append(f"{a} uses {b}")

    # Tarjan's strongly connected components.
    index, low, on_stack, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10_000)
    for v in sorted(modules):
        if v not in index:
            visit(v)

    if not sccs:
        print(f"{crate}: {len(modules)} modules, no cycle")
        return 0
    for scc in sccs:
        print(f"{crate}: module cycle among {', '.join(scc)}")
        members = set(scc)
        for (a, b), reasons in sorted(why.items()):
            if a in members and b in members:
                print(f"  {a} -> {b}: {reasons[0]}" + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""))
    return 1


if __name__ == "__main__":
    sys.exit(main())
