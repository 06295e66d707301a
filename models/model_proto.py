"""The one way the builders in :mod:`onnxforge.models` turn nodes into a ModelProto."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

#: Opset and IR version of every built model (opset 17 has LayerNormalization; IR 8 is what
#: onnxruntime releases of the last years all load).
OPSET = 17
IR_VERSION = 8


def make_model(
    nodes: Sequence[onnx.NodeProto],
    name: str,
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    """A model of one graph at :data:`OPSET` / :data:`IR_VERSION`, produced by onnxforge.models."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxforge.models")
    model.ir_version = IR_VERSION
    return model
