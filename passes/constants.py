"""Constant normalization: ``Constant`` nodes become initializers of their graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir import Model, Node
from onnxforge.ir.constants import initializers_allowed
from onnxforge.passmanager import Pass, PassContext, PassResult


def constant_tensor(node: Node) -> onnx.TensorProto | None:
    """A new TensorProto holding a ``Constant`` node's value, for every dense attribute form
    (``value``, ``value_float(s)``, ``value_int(s)``, ``value_string(s)``); None for
    ``sparse_value``, attribute references and malformed nodes. Strings keep their exact bytes."""
    if len(node.attributes) != 1:
        return None
    ((name, a),) = node.attributes.items()
    if a.ref_attr_name:
        return None
    if name == "value":
        t = onnx.TensorProto()
        t.CopyFrom(a.t)
        return t
    if name == "value_float":
        return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
    if name == "value_floats":
        return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
    if name == "value_int":
        return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
    if name == "value_ints":
        return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
    if name == "value_string":
        return helper.make_tensor("", onnx.TensorProto.STRING, [], [a.s])
    if name == "value_strings":
        return helper.make_tensor("", onnx.TensorProto.STRING, [len(a.strings)], list(a.strings))
    return None


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
                tensor = constant_tensor(node)
                if tensor is None:
                    continue
                node.set_outputs([])  # detach the value from its producer ...
                graph.remove(node)
                out.set_const(tensor)  # ... and make it the initializer (same object, same name)
                graph.initializers[out.name] = out
                converted += 1
        return PassResult(modified=converted > 0, stats={"converted_constants": converted})
