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
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        store = model.tensor_store
        removed = saved = 0
        for graph in list(model.graph.all_graphs()):
            # Only tensors that share element type, shape and byte size can be equal: hash
            # just those (most weights have a unique shape and are never read).
            buckets: dict[tuple[int, tuple[int, ...], int], list[Value]] = {}
            for v in graph.initializers.values():
                t = v.const
                if t is None or v.is_graph_input():
                    continue
                buckets.setdefault((t.data_type, tuple(t.dims), v.const_nbytes()), []).append(v)
            for group in buckets.values():
                if len(group) < 2:
                    continue
                r, b = self._merge(group, store, self._digest_cache())
                removed += r
                saved += b
        if removed:
            log.debug("dedup-initializers: removed %d initializers (%d bytes)", removed, saved)
        return PassResult(
            modified=removed > 0,
            stats={"removed_initializers": removed, "saved_bytes": saved},
        )

    def _digest_cache(self) -> dict[int, tuple[onnx.TensorProto, bytes | None]]:
        """Digests by tensor object, kept across runs of this pass instance (a fixed-point
        pipeline runs it several times; tensors are replaced, never edited, by passes)."""
        cache = getattr(self, "_digests", None)
        if cache is None:
            cache = {}
            self._digests = cache
        return cache

    @staticmethod
    def _merge(
        group: list[Value], store: TensorStore | None, cache: dict[int, tuple[onnx.TensorProto, bytes | None]]
    ) -> tuple[int, int]:
        """Merge the identical tensors of one (type, shape, size) group; (removed, bytes)."""
        removed = saved = 0
        seen: dict[bytes, Value] = {}
        for v in group:
            t = v.const
            assert t is not None
            hit = cache.get(id(t))
            if hit is not None and hit[0] is t:
                digest = hit[1]
            else:
                digest = tensor_digest(t, store)
                cache[id(t)] = (t, digest)
            if digest is None:
                continue
            keep = seen.setdefault(digest, v)
            if keep is v:
                continue
            drop = v
            if v.is_graph_output():
                if keep.is_graph_output():
                    continue  # two outputs: each keeps its own name and data
                keep, drop = v, keep  # keep the output, fold the earlier one into it
                seen[digest] = keep
            saved += drop.const_nbytes()
            graph = drop.graph
            replace_all_uses_with(drop, keep)
            if graph is not None:
                graph.remove_initializer(drop)
            removed += 1
        return removed, saved
