"""Common-subexpression elimination: one node for each distinct computation of a graph."""

from __future__ import annotations

import onnx

from onnxforge.ir import Model, Node, replace_all_uses_with
from onnxforge.passes.cleanup.noop_elimination import dropout_is_inference, needs_identity
from onnxforge.passes.cleanup.toposort import topological_order
from onnxforge.passmanager import Pass, PassContext, PassResult

#: Standard ops whose result is not a function of their inputs and attributes.
NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)

Key = tuple[object, ...]


def _key(node: Node, model: Model) -> Key | None:
    """What makes two nodes compute the same thing, or None when ``node`` must not be merged."""
    if not node.is_standard_domain() or node.subgraphs or node.op_type in NONDETERMINISTIC_OPS:
        return None
    if node.op_type == "Dropout" and not dropout_is_inference(node, model):
        return None
    outputs = tuple(v is not None for v in node.outputs)
    if not any(outputs):
        return None
    inputs = [v.id if v is not None else None for v in node.inputs]
    while inputs and inputs[-1] is None:  # trailing omitted optionals are the same as absent
        inputs.pop()
    attrs = tuple(
        (name, a.SerializeToString(deterministic=True)) for name, a in sorted(node.attributes.items())
    )
    return (node.op_type, node.overload, tuple(inputs), outputs, attrs)


class CommonSubexpressionElimination(Pass):
    """Merges nodes of the same graph with the same op, overload, input values (same objects, same
    order), output arity and attributes (compared as serialized bytes). Identical ``Constant``
    nodes merge like any other node.

    Only deterministic ops of the standard domain without subgraphs are merged: random ops,
    training-mode Dropout, custom-domain ops and If/Loop/Scan are left alone. Each graph is its
    own scope (a node is never merged with one of another graph). One visit per node in
    topological order with a hash table: linear, and chains of duplicates collapse in one run.
    """

    name = "cse"
    summary = "Merge duplicate computations (same op, inputs and attributes) within each graph."
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        merged = merged_constants = 0
        for graph in list(model.graph.all_graphs()):
            table: dict[Key, Node] = {}
            for node in topological_order(graph):
                key = _key(node, model)
                if key is None:
                    continue
                first = table.setdefault(key, node)
                if first is node:
                    continue
                pairs = [(old, new) for old, new in zip(node.outputs, first.outputs) if old is not None]
                # Merging an Identity into another that needs a fresh Identity to keep a graph
                # output's name would only trade one for the other, run after run.
                if node.op_type == "Identity" and any(needs_identity(old, new) for old, new in pairs):
                    continue
                for old, new in pairs:
                    assert new is not None  # same output arity is part of the key
                    if new.type is None and old.type is not None and not new.is_graph_output():
                        new.type = onnx.TypeProto()
                        new.type.CopyFrom(old.type)
                    replace_all_uses_with(old, new)
                graph.remove(node)
                merged += 1
                merged_constants += node.op_type == "Constant"
        return PassResult(
            modified=merged > 0,
            stats={"merged_nodes": merged, "merged_constants": merged_constants},
        )
