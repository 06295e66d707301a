"""onnxruntime sessions for many variants of one model that share its large weights.

Ranking layer sensitivity builds one model per quantized layer, each a copy of the float model
with a single layer changed. Serializing every copy with all its weights and letting onnxruntime
parse and copy them again costs more than running it (ViT-B/16: 1.3 s per session for 330 MB of
weights). :class:`SharedWeightSessions` turns the float model's large initializers into
onnxruntime values once; a variant's initializers that are byte-identical to them are sent as
external initializers (``SessionOptions.add_external_initializers``) instead of in the proto.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, numpy_helper

from onnxforge.equivalence import OrtRunner
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.runtime.options import device_array
from onnxforge.runtime.session import create_session

#: Initializers at least this large are shared; small ones are cheaper to send.
MIN_SHARED_BYTES = 1 << 16


class SharedWeightSessions:
    """Creates CPU sessions for variants of ``base``, configured as :class:`OrtRunner`'s
    (optimizations off, one thread)."""

    def __init__(self, base: onnx.ModelProto, min_bytes: int = MIN_SHARED_BYTES) -> None:
        self._raw: dict[str, bytes] = {}
        self._values: dict[str, Any] = {}
        #: Names passed by reference to the latest session (for tests and logs).
        self.last_shared: list[str] = []
        for t in base.graph.initializer:
            if t.data_location != TensorProto.EXTERNAL and len(t.raw_data) >= min_bytes:
                self._raw[t.name] = t.raw_data
                self._values[t.name] = device_array(numpy_helper.to_array(t))

    def session(self, variant: onnx.ModelProto) -> Any:
        """A session for ``variant`` (not modified), its shared weights passed by reference."""
        used = _read_names(variant.graph)  # onnxruntime drops unread initializers before it looks for these
        shared = [
            t.name
            for t in variant.graph.initializer
            if t.name in self._raw
            and t.name in used
            and t.data_location != TensorProto.EXTERNAL
            and t.raw_data == self._raw[t.name]
        ]
        self.last_shared = shared
        model = variant
        arrays = {}
        if shared:
            model = onnx.ModelProto()
            model.CopyFrom(variant)
            names = set(shared)
            for t in model.graph.initializer:
                if t.name in names:
                    size = len(t.raw_data)
                    t.ClearField("raw_data")
                    t.data_location = TensorProto.EXTERNAL
                    del t.external_data[:]
                    for key, value in (
                        ("location", "onnxforge-shared-weights"),
                        ("offset", "0"),
                        ("length", str(size)),
                    ):
                        entry = t.external_data.add()
                        entry.key, entry.value = key, value
            arrays = {n: self._values[n] for n in shared}
        so = OrtRunner().options()
        if arrays:
            so.add_external_initializers(list(arrays), list(arrays.values()))
        return create_session(model, options=so)


def _read_names(g: onnx.GraphProto) -> set[str]:
    """Names read by the nodes of ``g`` and its subgraphs, and their outputs."""
    names: set[str] = set()
    for gp in graph_protos(g):
        names.update(o.name for o in gp.output)
        names.update(i for n in gp.node for i in n.input)
    return names
