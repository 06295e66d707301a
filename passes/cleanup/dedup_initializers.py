"""Exact weight sharing: identical constants merged, transposed duplicates shared.

* Identical initializers and ``Constant`` tensors of one graph (same element type, shape and
  bytes) become one: candidates are grouped by (type, shape, size), hashed (a 256-bit BLAKE2b
  digest of the canonical little-endian bytes, streamed for external data) and then compared
  byte for byte before anything merges. Initializers are kept over ``Constant`` nodes (they are
  visible to every node) and among ``Constant`` nodes the first in graph order, so every reader
  still comes after what it reads.
* With ``transposed``, a 2-D constant that equals the transpose of another is shared too: a
  ``Gemm`` reading it flips its ``transA``/``transB`` and reads the other tensor directly (no new
  node, nothing for a runtime to copy); any other reader gets a ``Transpose`` of it (disk is
  saved; onnxruntime folds the Transpose when it loads the model, so memory is not). Off in the
  lossless pipeline: constant folding there would fold the Transpose straight back.
* Tensors that are tied already (one initializer read by several nodes, e.g. an embedding and
  its LM head) stay one tensor: merging never splits a tensor.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir import Graph, Model, Node, Value, replace_all_uses_with
from onnxforge.ir.constants import constant_node_tensor, initializers_allowed
from onnxforge.ir.tensor_data import TensorStore, is_external
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

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


def tensor_bytes_equal(a: onnx.TensorProto, b: onnx.TensorProto, store: TensorStore | None) -> bool:
    """True when two tensors of the same element type and shape hold the same canonical bytes
    (the byte compare behind a digest match)."""
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    chunks_a, chunks_b = _canonical_chunks(a, store), _canonical_chunks(b, store)
    if chunks_a is None or chunks_b is None:
        return False
    left, right = b"", b""
    for block in chunks_a:
        left += block
        while len(right) < len(left):
            nxt = next(chunks_b, None)
            if nxt is None:
                return False
            right += nxt
        n = min(len(left), len(right))
        if left[:n] != right[:n]:
            return False
        left, right = left[n:], right[n:]
    return not left and not right and not any(chunks_b)  # what is left of b must be empty chunks


def _canonical_chunks(t: onnx.TensorProto, store: TensorStore | None) -> Iterator[bytes] | None:
    if t.data_type == onnx.TensorProto.STRING:
        if is_external(t):
            return None
        return iter([b"".join(len(s).to_bytes(8, "little") + s for s in t.string_data)])
    if is_external(t):
        return None if store is None else store.iter_chunks(t)
    if t.HasField("raw_data") and t.data_type not in _PACKED:
        return iter([t.raw_data])
    arr = np.ascontiguousarray(numpy_helper.to_array(t))
    if sys.byteorder == "big" and arr.dtype.itemsize > 1:
        arr = arr.byteswap()
    return iter([arr.tobytes()])


@dataclass(frozen=True)
class DedupOptions(PassOptions):
    """``constant_nodes``: merge ``Constant`` node tensors too (with each other and with
    initializers). ``transposed``: share a 2-D constant that is the transpose of another
    (``min_transposed_bytes`` and larger only)."""

    constant_nodes: bool = True
    transposed: bool = False
    min_transposed_bytes: int = 4096

    def validate(self) -> None:
        if self.min_transposed_bytes < 0:
            raise ValueError(f"min_transposed_bytes must be >= 0, got {self.min_transposed_bytes}")


@dataclass
class _Candidate:
    """A constant of one graph: an initializer, or the output of a ``Constant`` node."""

    value: Value
    tensor: onnx.TensorProto
    node: Node | None = None

    def nbytes(self) -> int:
        return self.value.const_nbytes() if self.node is None else _proto_nbytes(self.tensor)


def _proto_nbytes(t: onnx.TensorProto) -> int:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        return 0
    n = 1
    for d in t.dims:
        n *= d
    return n * itemsize


class DeduplicateInitializers(Pass):
    """Merges constants of the same graph with identical element type, shape and bytes
    (initializers, and ``Constant`` tensors with ``constant_nodes``); with ``transposed`` also
    shares 2-D constants that are transposes of each other (see the module docstring).

    Graph inputs (overridable defaults) are never touched. Each graph is its own scope. When a
    group contains a graph output, that one is kept so that no Identity is needed to preserve
    the output's name.
    """

    name = "dedup-initializers"
    summary = "Merge identical constants (initializers and Constant tensors, per graph); optionally transposed ones."
    lossless = True
    Options = DedupOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, DedupOptions)
        store = model.tensor_store
        removed = saved = merged_nodes = transposed = 0
        for graph in list(model.graph.all_graphs()):
            # Only tensors that share element type, shape and byte size can be equal: hash
            # just those (most weights have a unique shape and are never read).
            buckets: dict[tuple[int, tuple[int, ...], int], list[_Candidate]] = {}
            for c in self._candidates(graph, opts):
                t = c.tensor
                buckets.setdefault((t.data_type, tuple(t.dims), c.nbytes()), []).append(c)
            for group in buckets.values():
                if len(group) < 2:
                    continue
                r, n, b = self._merge(group, store, self._digest_cache())
                removed += r
                merged_nodes += n
                saved += b
            if opts.transposed:
                t_shared, t_saved = self._share_transposed(graph, opts, store)
                transposed += t_shared
                saved += t_saved
        if removed or merged_nodes or transposed:
            log.debug(
                "dedup-initializers: removed %d initializers, %d Constant nodes, shared %d transposed (%d bytes)",
                removed, merged_nodes, transposed, saved,
            )
        return PassResult(
            modified=removed + merged_nodes + transposed > 0,
            stats={
                "removed_initializers": removed,
                "removed_constant_nodes": merged_nodes,
                "shared_transposed": transposed,
                "saved_bytes": saved,
            },
        )

    @staticmethod
    def _candidates(graph: Graph, opts: DedupOptions) -> list[_Candidate]:
        out = [
            _Candidate(v, v.const)
            for v in graph.initializers.values()
            if v.const is not None and not v.is_graph_input()
        ]
        if opts.constant_nodes:
            for node in graph.topological_order():
                if node.op_type != "Constant" or not node.is_standard_domain() or len(node.outputs) != 1:
                    continue
                out_v = node.output(0)
                value = node.attributes.get("value")
                if out_v is None or len(node.attributes) != 1:
                    continue
                if value is not None and not value.ref_attr_name:
                    out.append(_Candidate(out_v, value.t, node))  # the attribute's own tensor: no copy
                    continue
                tensor = constant_node_tensor(node)
                if tensor is not None:
                    out.append(_Candidate(out_v, tensor, node))
        return out

    def _digest_cache(self) -> dict[int, tuple[onnx.TensorProto, bytes | None]]:
        """Digests by tensor object, kept across runs of this pass instance (a fixed-point
        pipeline runs it several times; tensors are replaced, never edited, by passes)."""
        cache = getattr(self, "_digests", None)
        if cache is None:
            cache = {}
            self._digests = cache
        return cache

    @staticmethod
    def _digest(t: onnx.TensorProto, store: TensorStore | None, cache: dict[int, tuple[onnx.TensorProto, bytes | None]]) -> bytes | None:
        hit = cache.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        digest = tensor_digest(t, store)
        cache[id(t)] = (t, digest)
        return digest

    @classmethod
    def _merge(
        cls,
        group: list[_Candidate],
        store: TensorStore | None,
        cache: dict[int, tuple[onnx.TensorProto, bytes | None]],
    ) -> tuple[int, int, int]:
        """Merge the identical tensors of one (type, shape, size) group; (initializers removed,
        Constant nodes removed, bytes saved)."""
        removed = nodes = saved = 0
        seen: dict[bytes, _Candidate] = {}
        for c in group:
            digest = cls._digest(c.tensor, store, cache)
            if digest is None:
                continue
            keep = seen.setdefault(digest, c)
            if keep is c:
                continue
            if not tensor_bytes_equal(keep.tensor, c.tensor, store):
                continue  # a digest collision: keep both
            drop = c
            if c.value.is_graph_output():
                if keep.value.is_graph_output() or c.node is not None:
                    continue  # each output keeps its own name and data (a Constant output may come late)
                keep, drop = c, keep  # keep the output initializer, fold the earlier one into it
                seen[digest] = keep
            saved += drop.nbytes()
            graph = drop.value.graph
            replace_all_uses_with(drop.value, keep.value)
            if drop.node is not None:
                g = drop.node.graph
                if g is not None:
                    g.remove(drop.node)
                nodes += 1
            else:
                if graph is not None:
                    graph.remove_initializer(drop.value)
                removed += 1
        return removed, nodes, saved

    def _share_transposed(self, graph: Graph, opts: DedupOptions, store: TensorStore | None) -> tuple[int, int]:
        """Share 2-D initializers that are transposes of another; (shared, bytes saved)."""
        if not initializers_allowed(graph):
            return 0, 0
        by_shape: dict[tuple[int, tuple[int, ...]], list[Value]] = {}
        for v in graph.initializers.values():
            t = v.const
            if t is None or v.is_graph_input() or len(t.dims) != 2 or t.data_type in _PACKED:
                continue
            if t.data_type == onnx.TensorProto.STRING or v.const_nbytes() < opts.min_transposed_bytes:
                continue
            by_shape.setdefault((t.data_type, tuple(t.dims)), []).append(v)
        cache = self._digest_cache()
        shared = saved = 0
        dropped: set[Value] = set()
        kept: set[Value] = set()
        added = False
        for (dtype, (m, n)), values in list(by_shape.items()):
            partners = by_shape.get((dtype, (n, m)), [])
            if not partners or (m == n and len(values) < 2):
                continue
            index: dict[bytes, list[Value]] = {}
            for a in partners:
                if a in dropped:
                    continue
                d = self._digest(a.const, store, cache)  # type: ignore[arg-type]
                if d is not None:
                    index.setdefault(d, []).append(a)
            for b in values:
                if b in kept or b in dropped or b.is_graph_output():
                    continue
                bt = np.ascontiguousarray(b.array().T)
                digest = tensor_digest(numpy_helper.from_array(bt), None)
                match = next(
                    (
                        a
                        for a in index.get(digest or b"", [])
                        if a is not b and a not in dropped and a.array().tobytes() == bt.tobytes()
                    ),
                    None,
                )
                if match is None:
                    continue
                drop, keep = b, match
                if _transposes_needed(match) < _transposes_needed(b) and match not in kept:
                    drop, keep = match, b  # the one whose readers can all read the other directly
                saved += drop.const_nbytes()
                added |= _read_through_transpose(graph, drop, keep)
                graph.remove_initializer(drop)
                dropped.add(drop)
                kept.add(keep)
                shared += 1
        if added:
            graph.toposort()  # the new Transposes read only constants: before their readers
        return shared, saved


def _transposes_needed(v: Value) -> int:
    """Readers of ``v`` that would need a Transpose if ``v`` were replaced by its transpose."""
    return sum(1 for node, idx in v.uses() if not (node.op_type == "Gemm" and idx in (0, 1)))


def _read_through_transpose(graph: Graph, old: Value, base: Value) -> bool:
    """Make every reader of ``old`` (== ``base``ᵀ) read ``base``: Gemm flips its trans
    attribute, anything else reads one Transpose of ``base``. True when a Transpose was added."""
    transposed: Value | None = None
    for node, idx in list(old.uses()):
        if node.op_type == "Gemm" and node.is_standard_domain() and idx in (0, 1) and node.graph is graph:
            attr = "transA" if idx == 0 else "transB"
            node.set_attr(attr, 1 - int(node.attr(attr, 0)))
            node.set_input(idx, base)
            continue
        if transposed is None:
            t = graph.add_node(
                "Transpose",
                [base],
                attrs={"perm": [1, 0]},
                name=f"{old.name}_shared_T",
                output_names=[f"{old.name}_shared_T"],
                provenance="dedup-initializers",
            )
            transposed = t.output(0)
            assert transposed is not None
            transposed.type = helper.make_tensor_type_proto(old.const.data_type, list(old.const.dims))  # type: ignore[union-attr]
        node.set_input(idx, transposed)
    return transposed is not None
