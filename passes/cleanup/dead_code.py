"""Dead-code elimination: nodes, initializers and value_info entries nothing reads."""

from __future__ import annotations

from collections.abc import Iterator

from onnxforge.ir import Graph, Model, Node, Value, captured_values
from onnxforge.passmanager import Pass, PassContext, PassResult


def _outer_scope_outputs(model: Model) -> dict[Value, int]:
    """Values listed as outputs of a subgraph that does not define them, with their counts.

    ONNX and onnxruntime reject such models and the IR never creates them (it inserts an
    Identity), but they are not recorded as uses, so we count them here defensively rather than
    delete the producer of a value some subgraph still returns.
    """
    pins: dict[Value, int] = {}
    for graph in model.graph.all_graphs():
        if graph.parent is None:
            continue
        for v in graph.outputs:
            if v.graph is not graph:
                pins[v] = pins.get(v, 0) + 1
    return pins


def _is_dead(node: Node, pins: dict[Value, int]) -> bool:
    outs = [v for v in node.outputs if v is not None]
    if not outs:
        # Nothing to read, so nothing to keep for, except that an op of a custom domain might
        # exist for its side effect: be conservative there.
        return node.is_standard_domain()
    return all(v.num_uses() == 0 and not v.is_graph_output() and not pins.get(v) for v in outs)


class DeadCodeElimination(Pass):
    """Removes nodes none of whose outputs is read (transitively, in every graph), initializers
    nothing reads (never graph inputs), and value_info entries of names that no longer exist.

    Liveness comes from use counts: graph outputs (of the main graph and of subgraphs) are the
    roots, and a node reading an outer value from inside a subgraph is an ordinary use of it, so
    a value captured by a live subgraph stays alive while one captured only by a dead node's
    subgraph dies with it. A worklist seeded with every node and fed with the producers of a
    removed node's inputs and captures makes the whole pass O(N + E).
    """

    name = "dead-code-elimination"
    summary = "Remove unused nodes, initializers and value_info entries (all graphs)."
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        pins = _outer_scope_outputs(model)
        removed_nodes = self._remove_dead_nodes(model, pins)
        removed_inits, freed = self._remove_dead_initializers(model, pins)
        removed_infos = self._remove_stale_value_info(model)
        modified = bool(removed_nodes or removed_inits or removed_infos)
        return PassResult(
            modified=modified,
            stats={
                "removed_nodes": removed_nodes,
                "removed_initializers": removed_inits,
                "removed_initializer_bytes": freed,
                "removed_value_info": removed_infos,
            },
        )

    @staticmethod
    def _remove_dead_nodes(model: Model, pins: dict[Value, int]) -> int:
        # Seed in graph order and pop from the end: consumers are seen before their producers,
        # so a dead chain dies in one sweep.
        work: list[Node] = list(model.graph.walk())
        dead_scopes: set[Graph] = set()  # subgraphs of removed nodes: their nodes are gone too
        removed = 0
        while work:
            node = work.pop()
            graph = node.graph
            if graph is None or graph in dead_scopes or not _is_dead(node, pins):
                continue
            feeders = [v for v in node.inputs if v is not None]
            if node.subgraphs:
                feeders.extend(captured_values(node))
                for sg in node.all_subgraphs():
                    for inner in sg.all_graphs():
                        dead_scopes.add(inner)
                        for v in inner.outputs:
                            if pins.get(v):
                                pins[v] -= 1
                                feeders.append(v)
            removed += 1 + (sum(1 for _ in _nested_nodes(node)) if node.subgraphs else 0)
            graph.remove(node)  # also drops the uses its subgraphs held on outer values
            for v in feeders:
                if v.producer is not None:
                    work.append(v.producer)
        return removed

    @staticmethod
    def _remove_dead_initializers(model: Model, pins: dict[Value, int]) -> tuple[int, int]:
        removed = freed = 0
        for graph in list(model.graph.all_graphs()):
            for v in list(graph.initializers.values()):
                if v.is_graph_input() or v.is_graph_output() or v.num_uses() or pins.get(v):
                    continue
                freed += v.const_nbytes()
                graph.remove_initializer(v)
                removed += 1
        return removed, freed

    @staticmethod
    def _remove_stale_value_info(model: Model) -> int:
        graphs = list(model.graph.all_graphs())
        names = {v.name for g in graphs for v in g.values()}
        removed = 0
        for graph in graphs:
            kept = [vi for vi in graph.extra_value_info if vi.name in names]
            if len(kept) != len(graph.extra_value_info):
                removed += len(graph.extra_value_info) - len(kept)
                graph.extra_value_info = kept
        return removed


def _nested_nodes(node: Node) -> Iterator[Node]:
    for sg in node.all_subgraphs():
        yield from sg.walk()
