"""Codebook-shared weights: per-tensor k-means codebooks, and how they are written in standard ONNX.

Numerics
    :func:`fit_codebook` replaces a float weight by ``centroids[indices]``: ``2^bits`` centroids
    (``bits`` from 2 to 8) found by one-dimensional k-means with linear initialization (evenly
    spaced between the smallest and the largest weight, as Deep Compression found best for the
    large weights that matter most). Exact zeros (pruned weights) keep an exact 0 centroid of
    their own (index 0) and take no part in the clustering. Optional ``importance`` weights each
    element in the k-means objective (the weighted objective ``sum h * (w - c)^2``; the weight
    sharing pass passes the second moment of the input channel each weight multiplies, so that
    the clustering minimizes layer-output error rather than weight error). One-dimensional
    k-means is exact and fast on sorted values: each Lloyd step is a ``searchsorted`` of the
    cluster boundaries and two prefix sums; tensors above ``sample`` elements are clustered on
    a seeded sample and every element is then assigned to its nearest centroid.

    :func:`refine_centroids` then moves the centroids, assignments fixed, to minimize the
    layer-output error on calibration data, ``tr((W0 - W)^T G (W0 - W))`` with ``G = X^T X``
    the Gram matrix of the layer's inputs: a linear least-squares problem in the centroids,
    solved by conjugate gradients (one ``G @ D`` product per step); the zero centroid stays 0.
    Before that, :func:`assign_with_error_feedback` re-chooses the indices one input channel at
    a time, pushing each channel's rounding error onto the channels still to come through the
    inverse Gram matrix (GPTQ's update, on a codebook): nearest-centroid rounding minimizes the
    weight error, this the output error.

Standard ONNX form
    ``indices`` (uint8, or uint4 packed two per byte when the opset is 21 or newer and
    ``bits <= 4``) and ``codebook`` (float, ``[2^bits]``) initializers decoded by::

        Cast(indices, to=INT32) → Gather(codebook, ·, axis=0) → weight

    onnxruntime constant-folds this subgraph when it creates a session (graph optimizations
    on), so the model runs on the dense weight: disk is saved, memory and speed are those of
    fp32. An embedding read by ``Gather(W, ids)`` is rewritten to gather the indices first,
    ``Gather(codebook, Cast(Gather(indices, ids)))``, which no runtime folds: the table stays in
    memory as uint8 indices. :func:`is_decode_node` recognizes both forms, so that constant
    folding leaves them alone, and :func:`read_codebook` reads them back (lowering, tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxforge.ir import PROVENANCE_KEY, Graph, Node, Value
from onnxforge.ir.constants import add_constant, constant_value
from onnxforge.ir.tensor_data import pack_nibbles

#: Provenance of the nodes that decode codebook weights.
PROVENANCE = "weight-sharing"
MIN_BITS, MAX_BITS = 2, 8
#: Opset of the default domain from which Cast reads uint4 (packed 4-bit indices).
UINT4_MIN_OPSET = 21
#: IR version that introduced the uint4 element type.
UINT4_MIN_IR_VERSION = 10
_INDEX_TYPES = (onnx.TensorProto.UINT8, onnx.TensorProto.UINT4)
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)


# --------------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Codebook:
    """A weight as ``centroids[indices]``.

    ``centroids``: float32 ``[2^bits]`` (sorted, except that an exact zero centroid, when
    present, is entry ``zero_index`` = 0). ``indices``: uint8 in the weight's shape."""

    centroids: np.ndarray
    indices: np.ndarray
    bits: int
    zero_index: int | None = None
    #: Per-channel scales (float32, broadcastable to the weight), or None: the weight is then
    #: ``centroids[indices] * scales``, the codebook shared by channels of different ranges.
    scales: np.ndarray | None = None

    def decode(self) -> np.ndarray:
        """The float32 weight this codebook stands for."""
        w = self.centroids[self.indices]
        return w * self.scales if self.scales is not None else w

    @property
    def used(self) -> int:
        """Centroids that some element points at."""
        return int(np.unique(self.indices).size)


def kmeans_1d(
    values: np.ndarray,
    k: int,
    *,
    weights: np.ndarray | None = None,
    iters: int = 60,
    sample: int = 1 << 20,
    seed: int = 0,
) -> np.ndarray:
    """``k`` centroids (sorted float64) of ``values`` by weighted Lloyd iterations from a linear
    initialization; an empty cluster keeps its centroid. At most ``sample`` values (seeded
    choice) are clustered. With ``weights``, Lloyd also starts from a linear initialization over
    the range that holds all but 0.1% of the weight mass (the full range can leave every
    important value in one cluster), and the better of the two results is kept."""
    x = np.asarray(values, np.float64).ravel()
    w = None if weights is None else np.asarray(weights, np.float64).ravel()
    if x.size == 0:
        return np.zeros(k)
    if x.size > sample:
        pick = np.random.default_rng(seed).choice(x.size, sample, replace=False)
        x = x[pick]
        w = None if w is None else w[pick]
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ws = np.ones_like(xs) if w is None else np.maximum(w[order], 0.0) + 1e-30
    cw = np.concatenate([[0.0], np.cumsum(ws)])
    cwx = np.concatenate([[0.0], np.cumsum(ws * xs)])
    cwxx = np.concatenate([[0.0], np.cumsum(ws * xs * xs)])

    def edges_of(c: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.searchsorted(xs, (c[1:] + c[:-1]) / 2), [xs.size]])

    def lloyd(c: np.ndarray) -> np.ndarray:
        for _ in range(iters):
            e = edges_of(c)
            mass = cw[e[1:]] - cw[e[:-1]]
            moment = cwx[e[1:]] - cwx[e[:-1]]
            new = np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), c)
            new.sort()
            if np.allclose(new, c, rtol=0, atol=1e-12 * max(1.0, float(np.abs(xs).max()))):
                return new
            c = new
        return c

    def cost(c: np.ndarray) -> float:
        e = edges_of(c)
        mass = cw[e[1:]] - cw[e[:-1]]
        moment = cwx[e[1:]] - cwx[e[:-1]]
        square = cwxx[e[1:]] - cwxx[e[:-1]]
        return float((square - 2 * c * moment + c * c * mass).sum())

    best = lloyd(np.linspace(xs[0], xs[-1], k))
    if w is not None:
        lo, hi = np.searchsorted(cw, [cw[-1] * 0.0005, cw[-1] * 0.9995])
        lo, hi = int(min(max(lo - 1, 0), xs.size - 1)), int(min(max(hi - 1, 0), xs.size - 1))
        if xs[hi] > xs[lo]:
            other = lloyd(np.linspace(xs[lo], xs[hi], k))
            if cost(other) < cost(best):
                best = other
    return best


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for every value (int64, same shape)."""
    c = np.asarray(centroids, np.float64)
    mid = (c[1:] + c[:-1]) / 2
    return np.searchsorted(mid, np.asarray(values, np.float64), side="left").astype(np.int64)


def channel_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """The largest magnitude of each channel along ``axis`` (1 for all-zero channels), shaped to
    broadcast against ``w``."""
    x = np.abs(np.asarray(w, np.float32))
    other = tuple(i for i in range(x.ndim) if i != axis)
    s = x.max(axis=other, keepdims=True) if x.size else np.ones([1] * x.ndim, np.float32)
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)


def round_to_precision(x: np.ndarray, dtype: type[np.floating]) -> np.ndarray:
    """``x`` (float32) rounded to the nearest value ``dtype`` represents, still float32; values
    outside ``dtype``'s normal range (overflow, or a nonzero that would flush to zero or lose
    precision as a subnormal) keep their float32 value."""
    x = np.asarray(x, np.float32)
    info = np.finfo(dtype)
    a = np.abs(x)
    ok = (a <= float(info.max)) & ((a >= float(info.smallest_normal)) | (a == 0))
    with np.errstate(over="ignore"):
        rounded = x.astype(dtype).astype(np.float32)
    return np.where(ok, rounded, x).astype(np.float32)


def fit_codebook(
    w: np.ndarray,
    bits: int,
    *,
    keep_zero: bool = True,
    importance: np.ndarray | None = None,
    scale_axis: int | None = None,
    scale_dtype: type[np.floating] | None = None,
    seed: int = 0,
) -> Codebook:
    """Cluster ``w`` into ``2^bits`` shared values (see the module docstring). ``importance``
    (broadcastable to ``w``) weights the k-means objective per element. With ``scale_axis``
    every channel along that axis is first divided by its largest magnitude (kept as a scale),
    so that one codebook serves channels of different ranges; ``scale_dtype`` (e.g. float16)
    rounds those scales to its precision first (they stay float32 tensors: an entropy coder
    then stores them in about half the bytes)."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    k = 1 << bits
    x = np.asarray(w, np.float32)
    imp = None if importance is None else np.broadcast_to(np.asarray(importance, np.float64), x.shape)
    scales = None
    if scale_axis is not None:
        scales = channel_scales(x, scale_axis)
        if scale_dtype is not None:
            scales = round_to_precision(scales, scale_dtype)
        x = x / scales
        s2 = np.broadcast_to(np.square(scales.astype(np.float64)), x.shape)  # errors scale back by s
        imp = s2 if imp is None else imp * s2
    zeros = x == 0
    zero_index: int | None = None
    indices = np.zeros(x.shape, np.uint8)
    if keep_zero and zeros.any():
        zero_index = 0
        nz = ~zeros
        vals = x[nz]
        c = kmeans_1d(vals, k - 1, weights=None if imp is None else imp[nz], seed=seed) if vals.size else np.zeros(k - 1)
        centroids = np.concatenate([[0.0], c]).astype(np.float32)
        if vals.size:
            indices[nz] = (assign(vals, c) + 1).astype(np.uint8)
    else:
        c = kmeans_1d(x, k, weights=imp, seed=seed)
        centroids = c.astype(np.float32)
        indices[...] = assign(x, c).astype(np.uint8)
    return Codebook(centroids, indices, bits, zero_index, scales)


def compact(cb: Codebook, dtype: type[np.floating] | None = None) -> Codebook:
    """``cb`` with only the centroids some element uses (the exact zero, when kept, stays entry
    0), indices renumbered; ``dtype`` (e.g. float16) rounds the centroids to its precision
    first (they stay float32). The weight it decodes to is unchanged but for that rounding."""
    centroids = cb.centroids if dtype is None else round_to_precision(cb.centroids, dtype)
    used = np.unique(cb.indices)
    if cb.zero_index is not None:  # the zero first (used or not), then the others in their order
        centroids = centroids.copy()
        centroids[cb.zero_index] = 0.0
        used = np.concatenate([[cb.zero_index], used[used != cb.zero_index]]).astype(np.int64)
    if np.array_equal(used, np.arange(centroids.size)):
        return Codebook(centroids, cb.indices, cb.bits, cb.zero_index, cb.scales)
    remap = np.zeros(centroids.size, np.uint8)
    remap[used] = np.arange(used.size, dtype=np.uint8)
    zero = 0 if cb.zero_index is not None else None
    return Codebook(centroids[used].astype(np.float32), remap[cb.indices], cb.bits, zero, cb.scales)


def refine_centroids(cb: Codebook, w0: np.ndarray, gram: np.ndarray, *, axis: int = 0, iters: int = 16) -> Codebook:
    """Centroids minimizing ``tr((W0 - W)^T G (W0 - W))`` for the fixed assignment, where the
    weight's ``axis`` is the input-channel axis ``G`` (``[K, K]``) is over; the zero centroid
    stays exactly 0. Conjugate gradients from the k-means centroids (never worse than them)."""
    w0m = np.moveaxis(np.asarray(w0, np.float64), axis, 0).reshape(gram.shape[0], -1)
    idx = np.moveaxis(cb.indices, axis, 0).reshape(gram.shape[0], -1).astype(np.int64)
    sc = np.ones_like(w0m)
    if cb.scales is not None:
        full = np.broadcast_to(cb.scales.astype(np.float64), cb.indices.shape)
        sc = np.moveaxis(full, axis, 0).reshape(gram.shape[0], -1)
    k = cb.centroids.size
    free = np.ones(k, bool)
    if cb.zero_index is not None:
        free[cb.zero_index] = False
    g = np.asarray(gram, np.float64)
    mu = cb.centroids.astype(np.float64)

    def objective(m: np.ndarray) -> float:
        e = w0m - m[idx] * sc
        return float(np.einsum("ij,ij->", e, g @ e))

    start = objective(mu)
    r_w = g @ (w0m - mu[idx] * sc)  # G (W0 - W): minus half the gradient in weight space
    r = np.bincount(idx.ravel(), weights=(r_w * sc).ravel(), minlength=k) * free
    d = r.copy()
    rr = float(r @ r)
    best = mu.copy()
    for _ in range(iters):
        if rr <= 1e-30:
            break
        gd = g @ (d[idx] * sc)
        q = np.bincount(idx.ravel(), weights=(gd * sc).ravel(), minlength=k) * free  # A d
        dq = float(d @ q)
        if dq <= 0:
            break
        alpha = rr / dq
        mu = mu + alpha * d
        r = r - alpha * q
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
        best = mu
    if objective(best) > start:  # numerical trouble: keep the k-means centroids
        return cb
    centroids = best.astype(np.float32)
    if cb.zero_index is not None:
        centroids[cb.zero_index] = 0.0
    return Codebook(centroids, cb.indices, cb.bits, cb.zero_index, cb.scales)


def assign_with_error_feedback(
    cb: Codebook, w0: np.ndarray, gram: np.ndarray, *, axis: int = 0, damp: float = 0.01, block: int = 128
) -> Codebook:
    """Indices chosen one input channel at a time, each channel's rounding error pushed onto the
    channels not yet rounded so that the layer output moves least (the optimal-brain-surgeon
    update of GPTQ, applied to a codebook instead of a uniform grid).

    ``gram`` is ``X^T X`` over the weight's input-channel ``axis``; the centroids and scales of
    ``cb`` stay as they are, exact zeros (pruned weights) stay exact zeros, and the non-zero
    weights only take non-zero centroids. ``damp`` adds that fraction of the mean diagonal to
    ``gram`` (a singular Gram matrix, e.g. from a channel that is always zero, stays solvable).
    Returns ``cb`` itself when the output error does not drop."""
    w0m = np.moveaxis(np.asarray(w0, np.float64), axis, 0)
    shape = w0m.shape
    w = w0m.reshape(shape[0], -1).copy()
    k = w.shape[0]
    sc = np.ones_like(w)
    if cb.scales is not None:
        full = np.broadcast_to(cb.scales.astype(np.float64), cb.indices.shape)
        sc = np.moveaxis(full, axis, 0).reshape(k, -1)
    g = np.asarray(gram, np.float64).copy()
    if g.shape != (k, k):
        raise ValueError(f"gram is {g.shape}, the weight has {k} input channels")
    dead = np.diag(g) <= 0
    g[dead, dead] = 1.0
    g[np.diag_indices(k)] += damp * float(np.mean(np.diag(g)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(g)).T  # upper: inv(G) = U^T U
    except np.linalg.LinAlgError:
        return cb
    pruned = w == 0
    mu = cb.centroids.astype(np.float64)
    order = np.argsort(mu, kind="stable")
    nonzero_c = order if cb.zero_index is None else order[order != cb.zero_index]
    cand = mu[nonzero_c]
    mid = (cand[1:] + cand[:-1]) / 2
    idx = np.zeros(w.shape, np.int64)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        err = np.zeros((b1 - b0, w.shape[1]))
        for i in range(b0, b1):
            row = w[i]
            pick = nonzero_c[np.searchsorted(mid, row / sc[i], side="left")]
            if cb.zero_index is not None:
                pick = np.where(pruned[i], cb.zero_index, pick)
            idx[i] = pick
            q = mu[pick] * sc[i]
            e = (row - q) / u[i, i]
            err[i - b0] = e
            w[i + 1 : b1] -= np.outer(u[i, i + 1 : b1], e)
        w[b1:] -= u[b0:b1, b1:].T @ err
    indices = np.moveaxis(idx.reshape(shape), 0, axis).astype(np.uint8)
    fed = Codebook(cb.centroids, indices, cb.bits, cb.zero_index, cb.scales)

    def output_error(c: Codebook) -> float:
        e = np.moveaxis(np.asarray(w0, np.float64) - c.decode(), axis, 0).reshape(k, -1)
        return float(np.einsum("ij,ij->", e, np.asarray(gram, np.float64) @ e))

    return fed if output_error(fed) < output_error(cb) else cb


def weight_sqnr(w: np.ndarray, cb: Codebook) -> float:
    """SQNR (dB) of the codebook weight against the float weight."""
    ref = np.asarray(w, np.float64)
    err = float(np.square(ref - cb.decode()).sum())
    sig = float(np.square(ref).sum())
    if err == 0:
        return math.inf
    return 10 * math.log10(sig / err) if sig > 0 else -math.inf


# --------------------------------------------------------------------------------------------
# The standard ONNX form
# --------------------------------------------------------------------------------------------
def packed_uint4(indices: np.ndarray) -> onnx.TensorProto:
    """A uint4 tensor of ``indices`` (values < 16), two per byte, the first in the low nibble."""
    raw = pack_nibbles(indices)
    return helper.make_tensor("", onnx.TensorProto.UINT4, list(indices.shape), raw, raw=True)


def can_pack_4bit(graph: Graph) -> bool:
    """Whether the model's opset lets Cast read uint4 indices."""
    model = graph.model
    return model is not None and (model.opset("") or 0) >= UINT4_MIN_OPSET


@dataclass
class StoredCodebook:
    """The initializers that hold one codebook weight."""

    indices: Value
    codebook: Value
    scales: Value | None = None

    @property
    def nbytes(self) -> int:
        return self.indices.const_nbytes() + self.codebook.const_nbytes() + (self.scales.const_nbytes() if self.scales is not None else 0)


def store_codebook(graph: Graph, cb: Codebook, name: str, dtype: np.dtype, *, pack: bool) -> StoredCodebook:
    """Add the indices (uint8, or packed uint4 when ``pack`` and ``bits <= 4``) and the codebook
    (in ``dtype``) of ``cb`` as constants of ``graph``."""
    if pack and cb.bits <= 4:
        model = graph.model
        assert model is not None
        model.ir_version = max(model.ir_version, UINT4_MIN_IR_VERSION)
        idx = add_constant(graph, packed_uint4(cb.indices), f"{name}_codebook_indices")
    else:
        idx = add_constant(graph, np.ascontiguousarray(cb.indices, np.uint8), f"{name}_codebook_indices")
    book = add_constant(graph, cb.centroids.astype(dtype), f"{name}_codebook")
    scales = None if cb.scales is None else add_constant(graph, cb.scales.astype(dtype), f"{name}_codebook_scales")
    return StoredCodebook(idx, book, scales)


def emit_decode(graph: Graph, stored: StoredCodebook, name: str, type_: onnx.TypeProto | None) -> Value:
    """``Gather(codebook, Cast(indices))``: the dense weight, in ``graph``."""
    cast = graph.add_node(
        "Cast",
        [stored.indices],
        attrs={"to": onnx.TensorProto.INT32},
        name=f"{name}_codebook_cast",
        output_names=[f"{name}_codebook_idx32"],
        provenance=PROVENANCE,
    )
    gather = graph.add_node(
        "Gather",
        [stored.codebook, cast.output(0)],
        attrs={"axis": 0},
        name=f"{name}_codebook_decode",
        output_names=[f"{name}_decoded" if stored.scales is None else f"{name}_codebook_values"],
        provenance=PROVENANCE,
    )
    out = gather.output(0)
    assert out is not None
    if stored.scales is not None:
        mul = graph.add_node(
            "Mul", [out, stored.scales], name=f"{name}_codebook_scale", output_names=[f"{name}_decoded"], provenance=PROVENANCE
        )
        out = mul.output(0)
        assert out is not None
    if type_ is not None:
        out.type = type_
    return out


def emit_gather_decode(graph: Graph, stored: StoredCodebook, node: Node) -> None:
    """Rewrite an embedding lookup ``Gather(W, ids, axis=0)`` to gather the indices first:
    ``Gather(codebook, Cast(Gather(indices, ids)))``, times the per-column scales when the
    codebook has them; the node's output keeps its value."""
    ids = node.input(1)
    out = node.output(0)
    assert ids is not None and out is not None
    base = node.name or out.name
    rows = graph.add_node(
        "Gather",
        [stored.indices, ids],
        attrs={"axis": 0},
        name=f"{base}_codebook_rows",
        output_names=[f"{out.name}_codebook_rows"],
        provenance=PROVENANCE,
    )
    cast = graph.add_node(
        "Cast",
        [rows.output(0)],
        attrs={"to": onnx.TensorProto.INT32},
        name=f"{base}_codebook_cast",
        output_names=[f"{out.name}_codebook_idx32"],
        provenance=PROVENANCE,
    )
    node.set_input(0, stored.codebook)
    node.set_input(1, cast.output(0))
    if stored.scales is not None:  # per-column scales ([1, D]) multiply the gathered rows
        model = graph.model
        assert model is not None
        raw = Value(model.unique_name(f"{out.name}_codebook_values"))
        node.set_outputs([raw])
        mul = Node("Mul", [raw, stored.scales], [out], name=model.unique_node_name(f"{base}_codebook_scale"))
        mul.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=PROVENANCE))
        graph.append(mul)


def _codebook_const(v: Value | None) -> np.ndarray | None:
    if v is None or not v.is_constant():
        return None
    t = v.const
    if t is None or t.data_type not in _FLOATS or len(t.dims) != 1 or not 0 < t.dims[0] <= 1 << MAX_BITS:
        return None
    return constant_value(v)


def _is_index_cast(node: Node) -> bool:
    """Cast of small unsigned integer codes to int32/int64 (a codebook's indices)."""
    if node.op_type != "Cast" or not node.is_standard_domain():
        return False
    if int(node.attr("to", 0)) not in (onnx.TensorProto.INT32, onnx.TensorProto.INT64):
        return False
    src = node.input(0)
    if src is None:
        return False
    if src.is_constant():
        t = src.const
        return t is not None and t.data_type in _INDEX_TYPES
    p = src.producer  # indices gathered first (an embedding)
    return (
        p is not None
        and p.op_type == "Gather"
        and p.input(0) is not None
        and p.input(0).is_constant()  # type: ignore[union-attr]
        and p.input(0).const.data_type in _INDEX_TYPES  # type: ignore[union-attr]
    )


def is_decode_node(node: Node) -> bool:
    """True for the nodes of a codebook decode (the Cast of the indices and the Gather of the
    codebook): folding them would turn the compact indices back into a dense weight."""
    if not node.is_standard_domain():
        return False
    if node.op_type == "Cast":
        return _is_index_cast(node) and all(
            u.op_type == "Gather" and i == 1 and _codebook_const(u.input(0)) is not None for u, i in node.output(0).uses()  # type: ignore[union-attr]
        )
    if node.op_type == "Gather":
        idx = node.input(1)
        p = idx.producer if idx is not None else None
        if _codebook_const(node.input(0)) is not None and p is not None and _is_index_cast(p):
            return True
        # the first Gather of an embedding lookup: indices table, gathered by ids
        data = node.input(0)
        out = node.output(0)
        return (
            data is not None
            and data.is_constant()
            and data.const.data_type in _INDEX_TYPES  # type: ignore[union-attr]
            and out is not None
            and any(_is_index_cast(u) for u in out.consumers())
        )
    return False


def decoded_weight(v: Value | None) -> tuple[np.ndarray, int] | None:
    """For a value computed by a codebook decode (``Gather(codebook, Cast(indices))``, times
    per-channel scales when there are): (the dense weight, the codebook's size); else None."""
    if v is None:
        return None
    p = v.producer
    scales = None
    if p is not None and p.op_type == "Mul" and p.is_standard_domain():
        scales = constant_value(p.input(1))
        v = p.input(0)
    got = read_codebook(v)
    if got is None or (p is not None and p.op_type == "Mul" and scales is None):
        return None
    book, idx, _ = got
    indices = constant_value(idx)
    if indices is None:
        return None
    w = book.astype(np.float32)[indices.astype(np.int64)]
    if scales is not None:
        try:
            w = w * scales.astype(np.float32)
        except ValueError:
            return None
    return w, int(book.size)


def read_codebook(v: Value | None) -> tuple[np.ndarray, Value, Node] | None:
    """For a value computed by ``Gather(codebook, Cast(indices))``: (codebook, the indices
    value, the Gather); None for anything else."""
    if v is None:
        return None
    g = v.producer
    if g is None or g.op_type != "Gather" or not g.is_standard_domain() or int(g.attr("axis", 0)) != 0:
        return None
    book = _codebook_const(g.input(0))
    cast = g.input(1).producer if g.input(1) is not None else None  # type: ignore[union-attr]
    if book is None or cast is None or not _is_index_cast(cast):
        return None
    idx = cast.input(0)
    if idx is None or not idx.is_constant():
        return None
    return book, idx, g
