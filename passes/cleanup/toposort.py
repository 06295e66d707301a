"""Topological sorting of every graph, and a non-mutating topological order for other passes."""

from __future__ import annotations

from onnxforge.ir import Graph, Model, Node
from onnxforge.passmanager import Pass, PassContext, PassResult


def topological_order(graph: Graph) -> list[Node]:
    """The nodes of ``graph`` in a topological order without reordering the graph (see
    :meth:`onnxforge.ir.Graph.topological_order`). Passes that visit producers before consumers
    use this so that visiting does not count as a modification."""
    return graph.topological_order()


class TopologicalSort(Pass):
    """Sorts the nodes of the main graph and of every subgraph topologically (stable: nodes
    already in a valid position keep it)."""

    name = "toposort"
    summary = "Sort the nodes of every graph topologically (stable)."
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        reordered = 0
        for graph in list(model.graph.all_graphs()):
            if graph.toposort():
                reordered += 1
        return PassResult(modified=reordered > 0, stats={"reordered_graphs": reordered})
