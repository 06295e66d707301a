"""Reading and creating constant values, whichever way the model spells them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir.core import Graph, Node, Value


def constant_value(v: Value | None) -> np.ndarray | None:
    """The data of ``v`` if it is a non-overridable constant (an initializer that is not a graph
    input, or the output of a ``Constant`` node), else None."""
    if v is None:
        return None
    if v.is_constant():
        return v.array()
    p = v.producer
    if p is not None and p.op_type == "Constant" and p.is_standard_domain():
        return constant_node_value(p)
    return None


def is_constant(v: Value | None) -> bool:
    if v is None:
        return False
    if v.is_constant():
        return True
    p = v.producer
    return p is not None and p.op_type == "Constant" and p.is_standard_domain() and not _has_ref_attr(p)


def _has_ref_attr(node: Node) -> bool:
    return any(a.ref_attr_name for a in node.attributes.values())


def constant_node_tensor(node: Node) -> onnx.TensorProto | None:
    """A new TensorProto holding a ``Constant`` node's value, for every dense attribute form
    (``value``, ``value_float(s)``, ``value_int(s)``, ``value_string(s)``); None for
    ``sparse_value``, attribute references and malformed nodes. Strings keep their exact bytes."""
    if _has_ref_attr(node) or len(node.attributes) != 1:
        return None
    ((name, a),) = node.attributes.items()
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
    return None  # sparse_value: left alone


def constant_node_value(node: Node) -> np.ndarray | None:
    """The value of a ``Constant`` node in any dense attribute form (None for sparse/ref)."""
    t = constant_node_tensor(node)
    return None if t is None else numpy_helper.to_array(t)


def initializers_allowed(graph: Graph) -> bool:
    """IR version < 4 requires every initializer to be a graph input, so new constants must be
    Constant nodes there."""
    model = graph.model
    return model is None or model.ir_version >= 4


def add_constant(graph: Graph, data: np.ndarray | onnx.TensorProto, name: str) -> Value:
    """Create a constant value in ``graph``: an initializer where the IR version allows it,
    otherwise a ``Constant`` node."""
    if initializers_allowed(graph):
        return graph.add_initializer(name, data)
    tensor = data if isinstance(data, onnx.TensorProto) else numpy_helper.from_array(np.asarray(data))
    node = graph.add_node("Constant", [], output_names=[name], name=f"{name}_const")
    node.attributes["value"] = helper.make_attribute("value", tensor)
    out = node.outputs[0]
    assert out is not None
    return out
