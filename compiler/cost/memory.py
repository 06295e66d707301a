"""Peak activation memory from tensor lifetimes over an execution order.

Model: every non-constant value (graph inputs and node outputs; weights are counted apart) is
allocated when its producer runs (graph inputs: before the first node) and freed right after
its last consumer runs; graph outputs live to the end. While a node runs, its inputs and
outputs are all live, and a node with subgraphs (If/Loop/Scan) also holds the peak of its
largest subgraph. The peak is the largest live total over the order.

:func:`memory_order` finds an order with a lower peak by greedy list scheduling: among the
nodes whose inputs are ready, run the one that frees the most bytes net of what it allocates
(ties go to the original order). It is a heuristic; the report shows it only when it helps.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from onnxforge.ir import Graph, Node, Value, captured_values
from onnxforge.ir.constants import is_constant

SizeFn = Callable[[Value], int]


@dataclass
class MemoryProfile:
    """Peak activation bytes of one order, where it happens and what is live there."""

    peak_bytes: int = 0
    peak_node: str = ""
    peak_step: int = 0
    live_at_peak: list[tuple[str, int]] = field(default_factory=list)


def _is_activation(v: Value | None) -> bool:
    return v is not None and not is_constant(v) and not v.is_initializer()


def _reads(node: Node) -> list[Value]:
    """Values of the node's own graph that it reads, directly or through its subgraphs."""
    seen: dict[Value, None] = {}
    for v in node.inputs:
        if v is not None:
            seen[v] = None
    if node.has_subgraphs():
        for v in captured_values(node):
            seen[v] = None
    return [v for v in seen if v.graph is node.graph]


def _last_uses(graph: Graph, order: Sequence[Node], reads: dict[Node, list[Value]]) -> dict[Value, int]:
    last: dict[Value, int] = {}
    for i, node in enumerate(order):
        for v in reads[node]:
            last[v] = i
    return last


def activation_peak(
    graph: Graph,
    size: SizeFn,
    order: Sequence[Node] | None = None,
    subgraph_peak: Callable[[Node], int] | None = None,
) -> MemoryProfile:
    """The peak of ``graph`` executed in ``order`` (default: its topological order)."""
    order = list(order) if order is not None else graph.topological_order()
    reads = {n: [v for v in _reads(n) if _is_activation(v) and v.graph is graph] for n in order}
    last = _last_uses(graph, order, reads)
    outputs = set(graph.outputs)
    live: dict[Value, int] = {}
    for v in graph.inputs:
        if _is_activation(v):
            live[v] = size(v)
    current = sum(live.values())
    best = MemoryProfile(peak_bytes=current, peak_node="(inputs)", peak_step=-1, live_at_peak=_top(live))
    for i, node in enumerate(order):
        for v in node.outputs:
            if _is_activation(v) and v not in live:
                assert v is not None
                live[v] = size(v)
                current += live[v]
        extra = subgraph_peak(node) if subgraph_peak is not None and node.has_subgraphs() else 0
        if current + extra > best.peak_bytes:
            best = MemoryProfile(current + extra, node.name or node.op_type, i, _top(live))
        for v in list(reads[node]) + [o for o in node.outputs if o is not None]:
            if v in live and last.get(v, -1) <= i and v not in outputs:
                current -= live.pop(v)
    return best


def _top(live: dict[Value, int], n: int = 5) -> list[tuple[str, int]]:
    return sorted(((v.name, b) for v, b in live.items()), key=lambda kv: -kv[1])[:n]


def memory_order(graph: Graph, size: SizeFn) -> list[Node]:
    """A topological order of ``graph`` chosen greedily to keep live activation bytes low."""
    nodes = graph.topological_order()
    index = {n: i for i, n in enumerate(nodes)}
    reads = {n: [v for v in _reads(n) if _is_activation(v) and v.graph is graph] for n in nodes}
    remaining: dict[Value, int] = {}
    for n in nodes:
        for v in reads[n]:
            remaining[v] = remaining.get(v, 0) + 1
    waiting: dict[Node, int] = {}
    consumers: dict[Value, list[Node]] = {}
    producers = {o: n for n in nodes for o in n.outputs if o is not None}
    for n in nodes:
        deps = {producers[v] for v in _reads(n) if v in producers and producers[v] is not n}
        waiting[n] = len(deps)
        for d in deps:
            for o in d.outputs:
                if o is not None and n not in consumers.setdefault(o, []):
                    consumers[o].append(n)
    outputs = set(graph.outputs)

    def score(n: Node) -> int:
        alloc = sum(size(o) for o in n.outputs if _is_activation(o) and o not in outputs)
        freed = sum(size(v) for v in reads[n] if remaining.get(v) == 1 and v not in outputs)
        return alloc - freed

    heap = [(score(n), index[n], n) for n in nodes if waiting[n] == 0]
    heapq.heapify(heap)
    order: list[Node] = []
    done: set[Node] = set()
    while heap:
        s, i, n = heapq.heappop(heap)
        if n in done:
            continue
        now = score(n)
        if now != s:  # stale priority: a sibling consumer ran since it was pushed
            heapq.heappush(heap, (now, i, n))
            continue
        done.add(n)
        order.append(n)
        for v in reads[n]:
            remaining[v] -= 1
            if remaining[v] == 1:  # its last consumer now frees it: refresh that one's score
                for c in _pending_consumers(v, reads, done):
                    if waiting[c] == 0:
                        heapq.heappush(heap, (score(c), index[c], c))
        released: set[Node] = set()
        for o in n.outputs:
            for c in consumers.get(o, []) if o is not None else []:
                if c not in released:
                    released.add(c)
                    waiting[c] -= 1
                    if waiting[c] == 0:
                        heapq.heappush(heap, (score(c), index[c], c))
    if len(order) != len(nodes):  # cannot happen for a valid DAG; keep the original order
        return nodes
    return order


def _pending_consumers(v: Value, reads: dict[Node, list[Value]], done: set[Node]) -> list[Node]:
    out = []
    for c in v.consumers():
        owner = c
        while owner not in reads and owner.graph is not None and owner.graph.parent is not None:
            owner = owner.graph.parent
        if owner in reads and owner not in done:
            out.append(owner)
    return out
