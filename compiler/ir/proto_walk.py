"""Walking the graphs of an ONNX protobuf: a node's subgraphs, and a graph with all it nests.

For code that must read protos directly (a copy being prepared for onnxruntime, a model not
yet imported into the IR); everything else walks :class:`~onnxforge.ir.Graph` instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by ``node``'s attributes (If branches, Loop/Scan bodies), in order."""
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def graph_protos(g: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``g`` and every graph nested in it, depth first."""
    yield g
    for node in g.node:
        for sub in subgraphs(node):
            yield from graph_protos(sub)
