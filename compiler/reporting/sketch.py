"""What a graph looked like, captured before and after a compilation for the HTML report: every
node's name and op type, and for small graphs (at most :data:`MAX_DRAWN_NODES` nodes) the
tensors each node reads and writes so that the page can draw it.

Capturing is linear in the number of nodes and copies only strings, so :func:`onnxforge.compile`
takes a sketch on every run; a pass that edits the model in place cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxforge.ir import Model, Node

#: Graphs with more top-level nodes than this are summarized per block instead of drawn.
MAX_DRAWN_NODES = 300


@dataclass(frozen=True)
class SketchNode:
    """One top-level node: ``key`` identifies it across before/after (its name, or its op type
    and first output when unnamed); ``inputs``/``outputs`` are filled for drawn graphs only."""

    key: str
    name: str
    op_type: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass
class GraphSketch:
    """The top-level graph's nodes in order, its inputs and outputs, and whether it is small
    enough to draw (``drawable``: the nodes carry their tensors)."""

    nodes: list[SketchNode] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    drawable: bool = False
    #: Nodes in every graph, subgraphs included (the top level is what is drawn).
    total_nodes: int = 0

    @classmethod
    def of(cls, model: Model, max_drawn: int = MAX_DRAWN_NODES) -> GraphSketch:
        """A sketch of ``model``'s main graph (edges only when it has at most ``max_drawn`` nodes)."""
        graph = model.graph
        drawable = len(graph.nodes) <= max_drawn
        nodes = [_sketch_node(n, drawable) for n in graph.nodes]
        return cls(
            nodes=nodes,
            inputs=[v.name for v in graph.inputs if not v.is_initializer()],
            outputs=[v.name for v in graph.outputs],
            drawable=drawable,
            total_nodes=model.num_nodes(),
        )

    def keys(self) -> set[str]:
        return {n.key for n in self.nodes}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"nodes": len(self.nodes), "total_nodes": self.total_nodes, "drawable": self.drawable}
        if self.drawable:
            d["graph"] = {
                "inputs": self.inputs,
                "outputs": self.outputs,
                "nodes": [
                    {"key": n.key, "op_type": n.op_type, "inputs": list(n.inputs), "outputs": list(n.outputs)} for n in self.nodes
                ],
            }
        return d


def _op(node: Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _sketch_node(node: Node, edges: bool) -> SketchNode:
    first = next((v.name for v in node.outputs if v is not None and v.name), "")
    key = node.name or f"{_op(node)}:{first}"
    if not edges:
        return SketchNode(key, node.name, _op(node))
    ins = tuple(v.name for v in node.inputs if v is not None and v.name and not v.is_constant())
    outs = tuple(v.name for v in node.outputs if v is not None and v.name)
    return SketchNode(key, node.name, _op(node), ins, outs)
