"""Topological sorting of every graph, and a non-mutating topological order for other passes."""

from __future__ import annotations

from collections.abc import Iterator

from onnxforge.ir import Graph, Model, Node, captured_values
from onnxforge.passmanager import Pass, PassContext, PassResult


def _deps(node: Node, graph: Graph) -> Iterator[Node]:
    """Nodes of ``graph`` that ``node`` depends on (its inputs' producers and, for nodes that own
    subgraphs, the producers of the outer values those subgraphs read)."""
    for v in node.inputs:
        if v is not None and v.producer is not None:
            yield v.producer
    if node.subgraphs:
        for v in captured_values(node):
            p = v.producer
            # A capture produced inside an enclosing graph's node: climb to `graph`'s level.
            while p is not None and p.graph is not graph:
                owner = p.graph
                p = owner.parent if owner is not None else None
            if p is not None:
                yield p


def topological_order(graph: Graph) -> list[Node]:
    """The nodes of ``graph`` in a topological order, without reordering the graph itself.

    Keeps the current order wherever it is already valid (iterative DFS over producers,
    O(N + E)); raises ``ValueError`` on a cycle. Passes that want to visit producers before
    consumers use this so that visiting does not count as a modification.
    """
    nodes = graph.nodes
    members = set(nodes)
    order: list[Node] = []
    state: dict[Node, int] = {}  # 1 = on the stack, 2 = emitted
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[Node, Iterator[Node]]] = [(root, _deps(root, graph))]
        while stack:
            node, it = stack[-1]
            for dep in it:
                if dep not in members:
                    continue
                st = state.get(dep)
                if st == 2:
                    continue
                if st == 1:
                    raise ValueError(f"graph {graph.name!r} has a cycle through {dep!r}")
                state[dep] = 1
                stack.append((dep, _deps(dep, graph)))
                break
            else:
                stack.pop()
                state[node] = 2
                order.append(node)
    return order


class TopologicalSort(Pass):
    """Sorts the nodes of the main graph and of every subgraph topologically (stable: nodes
    already in a valid position keep it)."""

    name = "toposort"
    summary = "Sort the nodes of every graph topologically (stable)."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        reordered = 0
        for graph in list(model.graph.all_graphs()):
            before = model.version
            graph.toposort()
            if model.version != before:
                reordered += 1
        return PassResult(modified=reordered > 0, stats={"reordered_graphs": reordered})
