"""Constant normalization: ``Constant`` nodes become initializers of their graph."""

from __future__ import annotations

from onnxforge.ir import Model
from onnxforge.ir.constants import constant_node_tensor, initializers_allowed
from onnxforge.passmanager import Pass, PassContext, PassResult


class NormalizeConstants(Pass):
    """Turns ``Constant`` nodes (standard domain) into initializers of the graph they live in,
    subgraphs included, so that later passes see one spelling of constants.

    The output value itself becomes the initializer: it keeps its name, its uses (inside nested
    subgraphs too) and its place among the graph outputs, so no renaming or Identity is needed.
    Skipped where initializers are not allowed (IR version < 4, where every initializer must be
    a graph input) and for ``sparse_value`` or attribute-reference Constants.
    """

    name = "normalize-constants"
    summary = "Turn Constant nodes into initializers (IR version >= 4; every graph)."
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        converted = 0
        for graph in list(model.graph.all_graphs()):
            if not initializers_allowed(graph):
                continue
            for node in graph:
                if node.op_type != "Constant" or not node.is_standard_domain() or len(node.outputs) != 1:
                    continue
                out = node.output(0)
                if out is None:
                    continue
                tensor = constant_node_tensor(node)
                if tensor is None:
                    continue
                node.set_outputs([])  # detach the value from its producer ...
                graph.remove(node)
                out.set_const(tensor)  # ... and make it the initializer (same object, same name)
                graph.initializers[out.name] = out
                converted += 1
        return PassResult(modified=converted > 0, stats={"converted_constants": converted})
