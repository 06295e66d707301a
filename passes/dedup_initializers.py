"""Exact deduplication of constant initializers."""

from __future__ import annotations

import hashlib
import logging
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir import Model, Value, replace_all_uses_with
from onnxforge.ir.tensor_data import TensorStore, is_external
from onnxforge.passmanager import Pass, PassContext, PassResult

log = logging.getLogger(__name__)

#: Element types whose raw bytes are not one fixed-size element after another.
_PACKED = {
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
    getattr(onnx.TensorProto, "FLOAT4E2M1", -1),
}


def tensor_digest(t: onnx.TensorProto, store: TensorStore | None) -> bytes | None:
    """A BLAKE2b digest of a tensor's content in a canonical form (little-endian element bytes,
    whatever field or file holds them), or None when it cannot be computed safely.

    External data is streamed in chunks, never loaded whole. Strings hash their length-prefixed
    bytes; packed sub-byte types hash their decoded elements.
    """
    h = hashlib.blake2b(digest_size=32)
    dtype = t.data_type
    if dtype == onnx.TensorProto.STRING:
        if is_external(t):
            return None
        h.update(b"str")
        for s in t.string_data:
            h.update(len(s).to_bytes(8, "little"))
            h.update(s)
        return h.digest()
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(dtype).itemsize
    except Exception:  # undefined or unknown element type
        return None
    if dtype in _PACKED or itemsize == 0:
        if is_external(t):
            return None
        h.update(b"decoded")
        h.update(numpy_helper.to_array(t).tobytes())
        return h.digest()
    h.update(b"raw")
    if is_external(t):
        if store is None:
            return None
        for block in store.iter_chunks(t):
            h.update(block)
    elif t.HasField("raw_data"):
        h.update(t.raw_data)
    else:
        arr = np.ascontiguousarray(numpy_helper.to_array(t))
        if sys.byteorder == "big" and itemsize > 1:
            arr = arr.byteswap()
        h.update(arr.tobytes())
    return h.digest()


class DeduplicateInitializers(Pass):
    """Merges initializers of the same graph with identical element type, shape and bytes.

    Graph inputs (overridable defaults) are never touched. Each graph is its own scope. When a
    group contains a graph output, that one is kept so that no Identity is needed to preserve
    the output's name. Content is compared through a 256-bit BLAKE2b digest, streamed for
    external data.
    """

    name = "dedup-initializers"
    summary = "Merge initializers with identical type, shape and bytes (per graph)."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        store = model.tensor_store
        removed = saved = 0
        for graph in list(model.graph.all_graphs()):
            seen: dict[tuple[int, tuple[int, ...], bytes], Value] = {}
            for v in list(graph.initializers.values()):
                t = v.const
                if t is None or v.is_graph_input():
                    continue
                digest = tensor_digest(t, store)
                if digest is None:
                    continue
                key = (t.data_type, tuple(t.dims), digest)
                keep = seen.setdefault(key, v)
                if keep is v:
                    continue
                drop = v
                if v.is_graph_output():
                    if keep.is_graph_output():
                        continue  # two outputs: each keeps its own name and data
                    keep, drop = v, keep  # keep the output, fold the earlier one into it
                    seen[key] = keep
                saved += drop.const_nbytes()
                replace_all_uses_with(drop, keep)
                graph.remove_initializer(drop)
                removed += 1
        if removed:
            log.debug("dedup-initializers: removed %d initializers (%d bytes)", removed, saved)
        return PassResult(
            modified=removed > 0,
            stats={"removed_initializers": removed, "saved_bytes": saved},
        )
