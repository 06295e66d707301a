"""onnxforge's graph IR. The only place that deals with ONNX protobuf structure directly.

See :mod:`onnxforge.ir.core` for the data model and docs/ARCHITECTURE.md for why it is ours
rather than onnx-graphsurgeon's.
"""

from onnxforge.ir.core import PROVENANCE_KEY, Graph, Model, Node, Value, captured_values, tensor_nbytes
from onnxforge.ir.graph_views import to_networkx, verify
from onnxforge.ir.rewrite import bypass, replace_all_uses_with
from onnxforge.ir.serde import from_proto, to_proto

__all__ = [
    "PROVENANCE_KEY",
    "Graph",
    "Model",
    "Node",
    "Value",
    "bypass",
    "captured_values",
    "from_proto",
    "replace_all_uses_with",
    "tensor_nbytes",
    "to_networkx",
    "to_proto",
    "verify",
]
