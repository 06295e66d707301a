"""4-bit weight-only quantization of MatMul/Gemm weights, blockwise along the reduction axis K.

Every ``block_size`` consecutive weights along K of one output column share a scale (and, for
uint4, a zero point). Two ways to express the result:

* ``target="portable"``: standard ONNX. The weight becomes an ``int4`` (symmetric) or ``uint4``
  (asymmetric) initializer in its original layout, read through a blockwise
  ``DequantizeLinear`` (opset 21: ``axis`` = the K axis of the weight, ``block_size``; scale and
  zero point have the weight's shape with the K axis ceil-divided by ``block_size``). The
  MatMul/Gemm itself is unchanged. Needs default-domain opset >= 21: the pass refuses models
  below that (use ``target="onnxruntime"``, or raise the opset first with
  :func:`onnxforge.passes.cleanup.opset_upgrade.raise_opset`, which checks the conversion on samples).
* ``target="onnxruntime"``: the node becomes ``com.microsoft::MatMulNBits`` (``K``, ``N``,
  ``bits=4``, ``block_size``). Layout, as in the schema registered by onnxruntime 1.32 and its
  own quantizer (``matmul_nbits_quantizer.py``, ``QuantFormat.QOperator``):

  - ``B``: uint8 ``[N, n_blocks, block_size / 2]``; the codes of column ``n`` along K, two per
    byte, the first in the low nibble; the last block is padded with the code of 0.
  - ``scales``: ``[N, n_blocks]``, the type of ``A``.
  - ``zero_points`` (uint4 only): uint8 ``[N, ceil(n_blocks / 2)]``, packed like ``B``.
    Without it onnxruntime uses 8, so symmetric codes are stored as ``q + 8``.
  - ``bias`` (input 5): a Gemm's ``beta * C`` when it only varies along N; otherwise an ``Add``
    follows. A Gemm's ``alpha`` is folded into the weight before quantization.

Quantization of one block (column ``n``, K indices of the block):

* symmetric int4: codes in [-8, 7], zero point 0. The scale is the candidate with the lowest
  squared error in the block among ``f * max|w| / 7`` and ``f * max|w| / 8`` for
  ``f`` in :data:`SCALE_FACTORS`. For MatMulNBits, as onnxruntime's MLAS quantizer does, the
  ``/ 8`` candidate takes the sign that maps the extreme weight to -8 exactly (a negative scale
  when the extreme is positive); the portable form keeps scales positive, which every runtime
  accepts. Measured on N(0, 1) weights, block 32: relative RMS weight error 0.097 with
  ``max|w| / 7`` alone, 0.094 with ``max|w| / 8`` and clipping, 0.087 (portable) and 0.082
  (signed) with the search.
* asymmetric uint4: the range ``[min(w, 0), max(w, 0)]`` shrunk by ``f``, ``scale = range / 15``,
  ``zero_point = clip(round(-lo / scale), 0, 15)``, codes ``clip(round(w / scale) + zp, 0, 15)``;
  the best ``f`` per block again.

Which nodes: ``MatMul`` and ``Gemm`` of every graph (If/Loop/Scan bodies too) whose input B is
a constant (initializer that is not a graph input, or ``Constant``) float32/float16 2-D tensor of
at least ``min_elements`` finite elements. For MatMulNBits additionally: a Gemm must not have
``transA``, and a MatMul's A must not be known to be 1-D. A weight read by several nodes is
quantized once; the float weight is deleted once nothing reads it any more. Skipped candidates
and their reasons are left in ``ctx.records["int4-weights"]``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxforge.errors import UsageError
from onnxforge.ir import PROVENANCE_KEY, Graph, Model, Node, Value
from onnxforge.ir.constants import add_constant, constant_value
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

PROVENANCE = "int4-weights"
MS_DOMAIN = "com.microsoft"
TARGETS = ("portable", "onnxruntime")
#: Shrink factors of the scale candidates tried per block (1.0 = the full range).
SCALE_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8)
#: Opset of the default domain that introduced blockwise DequantizeLinear and int4/uint4.
PORTABLE_MIN_OPSET = 21
#: IR version that introduced the int4/uint4 element types.
INT4_MIN_IR_VERSION = 10

_FLOAT_TYPES = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float16): onnx.TensorProto.FLOAT16}
#: Elements per chunk of columns quantized at once (bounds the temporary memory).
_CHUNK_ELEMENTS = 1 << 21


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Int4Options(PassOptions):
    """Options of :class:`QuantizeWeightsInt4`.

    ``block_size``: weights per scale along K (a power of two >= 16, MatMulNBits' rule).
    ``symmetric``: int4 with zero point 0, or uint4 with a zero point per block.
    ``target``: ``"portable"`` (blockwise DequantizeLinear, opset >= 21) or ``"onnxruntime"``
    (``com.microsoft::MatMulNBits``).
    ``min_elements``: smaller weights stay float.
    """

    block_size: int = 32
    symmetric: bool = True
    target: str = "portable"
    min_elements: int = 4096

    def validate(self) -> None:
        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 16 or b & (b - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {b!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be a bool, got {self.symmetric!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        m = self.min_elements
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"min_elements must be an integer >= 0, got {m!r}")


# --------------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockQuantized:
    """A [K, N] weight quantized in blocks of ``block_size`` along K, in MatMulNBits' order.

    ``codes``: int8 ``[N, n_blocks, block_size]`` (K padded with the code of 0): in [-8, 7]
    when ``zero_point`` is None (symmetric), else in [0, 15]. ``scale``: ``[N, n_blocks]`` in
    the weight's float type. ``zero_point``: uint8 ``[N, n_blocks]`` in [0, 15] or None.
    """

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    k: int

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_blocks(self) -> int:
        return int(self.codes.shape[1])

    @property
    def block_size(self) -> int:
        return int(self.codes.shape[2])

    @property
    def symmetric(self) -> bool:
        return self.zero_point is None

    def dequantize(self) -> np.ndarray:
        """The float32 [K, N] weight these codes stand for."""
        q = self.codes.astype(np.float32)
        if self.zero_point is not None:
            q = q - self.zero_point.astype(np.float32)[:, :, None]
        w = q * self.scale.astype(np.float32)[:, :, None]
        return np.ascontiguousarray(w.reshape(self.n, -1)[:, : self.k].T)


def quantize_blockwise(
    w: np.ndarray, block_size: int, *, symmetric: bool = True, signed_scale: bool = False
) -> BlockQuantized:
    """Quantize a float [K, N] weight to 4 bits in blocks of ``block_size`` along K (see the
    module docstring for the scale search). ``signed_scale`` lets symmetric scales be negative
    so that a positive extreme maps to -8 (MatMulNBits accepts that; keep it off for
    DequantizeLinear)."""
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    k, n = w.shape
    dtype = w.dtype if w.dtype in _FLOAT_TYPES else np.dtype(np.float32)
    n_blocks = max(1, math.ceil(k / block_size))
    padded = np.zeros((n, n_blocks * block_size), np.float32)
    padded[:, :k] = w.astype(np.float32).T
    x_all = padded.reshape(n, n_blocks, block_size)
    codes = np.empty(x_all.shape, np.int8)
    scale = np.empty((n, n_blocks), dtype)
    zp = None if symmetric else np.empty((n, n_blocks), np.uint8)
    step = max(1, _CHUNK_ELEMENTS // max(1, n_blocks * block_size))
    for start in range(0, n, step):
        sl = slice(start, start + step)
        if symmetric:
            c, s = _symmetric_block(x_all[sl], dtype, signed_scale)
        else:
            c, s, z = _asymmetric_block(x_all[sl], dtype)
            assert zp is not None
            zp[sl] = z
        codes[sl] = c
        scale[sl] = s
    return BlockQuantized(codes, scale, zp, k)


def _storable(s: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round candidate scales to the storage type; unusable ones (0, underflow) become 1 (their
    block is all zeros or too small to matter: every code is then the code of 0)."""
    s = s.astype(dtype).astype(np.float32)
    return np.where(np.isfinite(s) & (s != 0), s, np.float32(1.0))


def _symmetric_block(x: np.ndarray, dtype: np.dtype, signed_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    amax = np.abs(x).max(axis=-1, keepdims=True)
    if signed_scale:
        idx = np.abs(x).argmax(axis=-1)[..., None]
        extreme = np.take_along_axis(x, idx, axis=-1)
        eight = np.where(extreme > 0, -amax, amax) / 8  # maps the extreme to -8
    else:
        eight = amax / 8
    best_err = np.full(amax.shape, np.inf, np.float32)
    best_s = np.ones(amax.shape, np.float32)
    best_q = np.zeros(x.shape, np.float32)
    for base in (amax / 7, eight):
        for f in SCALE_FACTORS:
            s = _storable(base * np.float32(f), dtype)
            q = np.clip(np.rint(x / s), -8, 7)
            err = np.square(q * s - x).sum(axis=-1, keepdims=True)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_s = np.where(better, s, best_s)
            best_q = np.where(better, q, best_q)
    return best_q.astype(np.int8), best_s[..., 0].astype(dtype)


def _asymmetric_block(x: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo0 = np.minimum(x.min(axis=-1, keepdims=True), 0)
    hi0 = np.maximum(x.max(axis=-1, keepdims=True), 0)
    best_err = np.full(lo0.shape, np.inf, np.float32)
    best_s = np.ones(lo0.shape, np.float32)
    best_z = np.zeros(lo0.shape, np.float32)
    best_q = np.zeros(x.shape, np.float32)
    for f in SCALE_FACTORS:
        lo = lo0 * np.float32(f)
        s = _storable((hi0 - lo0) * np.float32(f) / 15, dtype)
        z = np.clip(np.rint(-lo / s), 0, 15)
        q = np.clip(np.rint(x / s) + z, 0, 15)
        err = np.square((q - z) * s - x).sum(axis=-1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, z, best_z)
        best_q = np.where(better, q, best_q)
    return best_q.astype(np.int8), best_s[..., 0].astype(dtype), best_z[..., 0].astype(np.uint8)


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes two per byte along the last axis, the first in the low nibble (ONNX's
    int4/uint4 layout and MatMulNBits'); an odd count is padded with a zero nibble. Signed codes
    are stored in two's complement."""
    v = (np.asarray(values).astype(np.int16) & 0x0F).astype(np.uint8)
    if v.shape[-1] % 2:
        v = np.concatenate([v, np.zeros((*v.shape[:-1], 1), np.uint8)], axis=-1)
    return (v[..., 0::2] | (v[..., 1::2] << 4)).astype(np.uint8)


def matmul_nbits_inputs(bq: BlockQuantized) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(B, scales, zero_points) of a 4-bit MatMulNBits (layout in the module docstring)."""
    codes = bq.codes.astype(np.int16)
    if bq.symmetric:
        codes = codes + 8  # the default zero point
    b = pack_nibbles(codes)  # [N, n_blocks, block_size / 2]
    zp = None if bq.zero_point is None else pack_nibbles(bq.zero_point)  # [N, ceil(n_blocks / 2)]
    return b, np.ascontiguousarray(bq.scale), zp


def dequantize_linear_inputs(
    bq: BlockQuantized, *, k_axis: int
) -> tuple[onnx.TensorProto, np.ndarray, onnx.TensorProto | None]:
    """(x, x_scale, x_zero_point) of a blockwise DequantizeLinear-21 that rebuilds the weight in
    its own layout: [K, N] when ``k_axis`` is 0 (MatMul, Gemm), [N, K] when it is 1 (Gemm with
    ``transB``). ``x`` is int4 (symmetric) or uint4; the scale and zero point have the weight's
    shape with the K axis ceil-divided by the block size."""
    codes = bq.codes.reshape(bq.n, -1)[:, : bq.k]  # [N, K]
    scale = bq.scale  # [N, n_blocks]
    zp = bq.zero_point
    if k_axis == 0:
        codes, scale = codes.T, scale.T
        zp = None if zp is None else zp.T
    elem = onnx.TensorProto.INT4 if bq.symmetric else onnx.TensorProto.UINT4
    x = _int4_tensor(codes, elem)
    zp_t = None if zp is None else _int4_tensor(zp, onnx.TensorProto.UINT4)
    return x, np.ascontiguousarray(scale), zp_t


def _int4_tensor(values: np.ndarray, elem: int) -> onnx.TensorProto:
    flat = np.ascontiguousarray(values).reshape(-1)
    raw = pack_nibbles(flat).tobytes()
    return helper.make_tensor("", elem, list(values.shape), raw, raw=True)


# --------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------
@dataclass
class _Site:
    """One node whose weight will be quantized."""

    node: Node
    weight: Value
    #: K axis of the stored weight: 0, or 1 for a Gemm with transB ([N, K]).
    k_axis: int
    #: Folded into the weight (a Gemm's alpha, MatMulNBits only).
    alpha: float = 1.0

    @property
    def key(self) -> tuple:
        """Sites with the same key share their quantized tensors."""
        return (self.weight.id, self.k_axis, self.alpha)

    def matrix(self) -> np.ndarray:
        """The [K, N] float weight the node multiplies by (read when it is quantized, so that
        only one weight at a time is held in memory in a second layout)."""
        w = constant_value(self.weight)
        assert w is not None
        w_kn = w.T if self.k_axis == 1 else w
        if self.alpha != 1.0:
            w_kn = (w_kn.astype(np.float32) * np.float32(self.alpha)).astype(w.dtype)
        return w_kn


@dataclass
class _Stats:
    nodes: int = 0
    weights: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    kept_float: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {
            "int4_nodes": self.nodes,
            "int4_weights": self.weights,
            "weight_bytes_before": self.bytes_before,
            "weight_bytes_after": self.bytes_after,
            "float_weights_kept": self.kept_float,
            "skipped_nodes": len(self.skipped),
        }


class QuantizeWeightsInt4(Pass):
    """4-bit blockwise weight-only quantization of MatMul/Gemm (see the module docstring)."""

    name = "int4-weights"
    summary = (
        "int4/uint4 blockwise weight-only MatMul/Gemm: DequantizeLinear-21 or com.microsoft MatMulNBits."
    )
    Options = Int4Options
    lossless = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, Int4Options)
        stats = _Stats()
        sites: list[_Site] = []
        for graph in list(model.graph.all_graphs()):
            for node in graph:
                site = self._plan(node, opts, stats)
                if site is not None:
                    sites.append(site)
        ctx.records[self.name] = {"skipped": dict(stats.skipped)}
        if not sites:
            return PassResult(False, stats.as_dict())
        if opts.target == "portable":
            opset = model.opset("") or 1
            if opset < PORTABLE_MIN_OPSET:
                raise UsageError(
                    f"target 'portable' emits blockwise DequantizeLinear with int4/uint4 data, which needs "
                    f"default-domain opset >= {PORTABLE_MIN_OPSET}; this model has opset {opset} "
                    f"({len(sites)} node(s) eligible). Use target='onnxruntime' (com.microsoft MatMulNBits), "
                    f"or raise the opset first (onnxforge.passes.cleanup.opset_upgrade.raise_opset checks the conversion)"
                )
            model.ir_version = max(model.ir_version, INT4_MIN_IR_VERSION)
        else:
            model.opset_imports.setdefault(MS_DOMAIN, 1)

        quantized: dict[tuple, BlockQuantized] = {}
        constants: dict[tuple, list[Value | None]] = {}
        dq_outputs: dict[tuple, Value] = {}
        weights: dict[Value, None] = {}
        biases: dict[Value, None] = {}  # Gemm C inputs that may be left unread
        for site in sites:
            bq = quantized.get(site.key)
            if bq is None:
                bq = quantize_blockwise(
                    site.matrix(),
                    opts.block_size,
                    symmetric=opts.symmetric,
                    signed_scale=opts.target == "onnxruntime",
                )
                quantized[site.key] = bq
            if site.weight not in weights:
                weights[site.weight] = None
                stats.bytes_before += site.weight.const_nbytes() or bq.k * bq.n * bq.scale.itemsize
            if opts.target == "portable":
                self._rewrite_portable(site, bq, constants, dq_outputs, stats)
            else:
                c = site.node.input(2) if site.node.op_type == "Gemm" else None
                self._rewrite_matmul_nbits(site, bq, constants, stats)
                if c is not None:
                    biases[c] = None
            stats.nodes += 1
        stats.weights = len(weights)
        for w in weights:
            if not _drop_if_unused(w):
                stats.kept_float += 1
        for c in biases:
            if c not in weights:
                _drop_if_unused(c)
        log.info(
            "int4-weights: %d node(s), %d weight(s), %d -> %d bytes, %d skipped",
            stats.nodes,
            stats.weights,
            stats.bytes_before,
            stats.bytes_after,
            len(stats.skipped),
        )
        return PassResult(True, stats.as_dict())

    # -- planning --------------------------------------------------------------------------
    def _plan(self, node: Node, opts: Int4Options, stats: _Stats) -> _Site | None:
        if node.op_type not in ("MatMul", "Gemm") or not node.is_standard_domain():
            return None
        reason, site = _check(node, opts)
        if site is None:
            label = node.name or f"{node.op_type}#{node.id}"
            stats.skipped[label] = reason
            log.debug("int4-weights: skipped %s: %s", label, reason)
        return site

    # -- rewriting ---------------------------------------------------------------------------
    def _rewrite_portable(
        self,
        site: _Site,
        bq: BlockQuantized,
        constants: dict[tuple, list[Value | None]],
        dq_outputs: dict[tuple, Value],
        stats: _Stats,
    ) -> None:
        node, w = site.node, site.weight
        graph = node.graph
        assert graph is not None
        home = w.graph or graph
        consts = constants.get(site.key)
        if consts is None:
            x, scale, zp = dequantize_linear_inputs(bq, k_axis=site.k_axis)
            consts = [
                add_constant(home, x, f"{w.name}_int4"),
                add_constant(home, scale, f"{w.name}_int4_scale"),
                None if zp is None else add_constant(home, zp, f"{w.name}_int4_zero_point"),
            ]
            stats.bytes_after += sum(v.const_nbytes() for v in consts if v is not None)
            constants[site.key] = consts
        dq_key = (*site.key, id(graph))
        out = dq_outputs.get(dq_key)
        if out is None:
            inputs = consts if consts[2] is not None else consts[:2]
            dq = graph.add_node(
                "DequantizeLinear",
                inputs,
                name=f"{w.name}_int4_DQ",
                attrs={"axis": site.k_axis, "block_size": bq.block_size},
                output_names=[f"{w.name}_dequantized"],
                provenance=PROVENANCE,
            )
            out = dq.output(0)
            assert out is not None
            elem = w.elem_type()
            shape = w.static_shape()
            if elem is not None and shape is not None:
                out.type = helper.make_tensor_type_proto(elem, list(shape))
            dq_outputs[dq_key] = out
        node.set_input(1, out)

    def _rewrite_matmul_nbits(
        self, site: _Site, bq: BlockQuantized, constants: dict[tuple, list[Value | None]], stats: _Stats
    ) -> None:
        node, w = site.node, site.weight
        graph = node.graph
        assert graph is not None
        home = w.graph or graph
        consts = constants.get(site.key)
        if consts is None:
            b, scales, zp = matmul_nbits_inputs(bq)
            consts = [
                add_constant(home, b, f"{w.name}_q4"),
                add_constant(home, scales, f"{w.name}_q4_scales"),
                None if zp is None else add_constant(home, zp, f"{w.name}_q4_zero_points"),
            ]
            stats.bytes_after += sum(v.const_nbytes() for v in consts if v is not None)
            constants[site.key] = consts
        a = node.input(0)
        y = node.output(0)
        assert y is not None
        bias: Value | None = None
        add_input: Value | None = None
        if node.op_type == "Gemm" and node.input(2) is not None:
            bias, add_input, extra = _gemm_bias(graph, node, bq.n, home)
            stats.bytes_after += extra
        inputs: list[Value | None] = [a, consts[0], consts[1], consts[2]]
        if bias is not None:
            inputs += [None, bias]
        attrs = {"K": bq.k, "N": bq.n, "bits": 4, "block_size": bq.block_size}
        base = node.name or f"{node.op_type}_{w.name}"
        node.set_outputs([])
        graph.remove(node, safe=False)
        if add_input is None:
            _append_node(graph, "MatMulNBits", inputs, [y], name=f"{base}_Q4", attrs=attrs, domain=MS_DOMAIN)
        else:
            mm = graph.add_node(
                "MatMulNBits",
                inputs,
                domain=MS_DOMAIN,
                name=f"{base}_Q4",
                attrs=attrs,
                output_names=[f"{y.name}_matmul"],
                provenance=PROVENANCE,
            )
            _append_node(graph, "Add", [mm.output(0), add_input], [y], name=f"{base}_bias")


def _append_node(
    graph: Graph,
    op_type: str,
    inputs: list[Value | None],
    outputs: list[Value],
    *,
    name: str,
    attrs: dict | None = None,
    domain: str = "",
) -> Node:
    """Append a node that produces existing values (names and types kept)."""
    model = graph.model
    assert model is not None
    node = Node(op_type, inputs, outputs, domain=domain, name=model.unique_node_name(name))
    for k, v in (attrs or {}).items():
        node.attributes[k] = helper.make_attribute(k, v)
    node.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=PROVENANCE))
    return graph.append(node)


def _check(node: Node, opts: Int4Options) -> tuple[str, _Site | None]:
    """Why ``node`` cannot be quantized (and None), or ("", its site)."""
    w_v = node.input(1)
    try:
        w = constant_value(w_v)
    except ValueError:
        w = None
    if w is None or w_v is None:
        return "weight B is not a constant", None
    if w.dtype not in _FLOAT_TYPES:
        return f"weight B is {w.dtype}, not float32/float16", None
    if w.ndim != 2:
        return f"weight B has rank {w.ndim}, not 2", None
    if w.size < opts.min_elements:
        return f"weight has {w.size} elements < min_elements={opts.min_elements}", None
    if not np.isfinite(w).all():
        return "weight has non-finite values", None
    ort = opts.target == "onnxruntime"
    k_axis = 0
    alpha = 1.0  # folded into the weight (MatMulNBits only: a portable Gemm keeps its alpha)
    if node.op_type == "Gemm":
        if int(node.attr("transB", 0)):
            k_axis = 1
        if ort:
            if int(node.attr("transA", 0)):
                return "Gemm with transA (MatMulNBits reads A as [M, K])", None
            alpha = float(node.attr("alpha", 1.0))
    elif ort:
        a_shape = node.input(0).shape() if node.input(0) is not None else None  # type: ignore[union-attr]
        if a_shape is not None and len(a_shape) < 2:
            return "A is 1-D (MatMulNBits needs rows)", None
    return "", _Site(node, w_v, k_axis, alpha)


def _gemm_bias(graph: Graph, node: Node, n: int, home: Graph) -> tuple[Value | None, Value | None, int]:
    """For a Gemm rewritten to MatMulNBits: (bias input [N], or None; value to Add after, or
    None; bytes of new constants)."""
    c_v = node.input(2)
    assert c_v is not None
    beta = float(node.attr("beta", 1.0))
    try:
        c = constant_value(c_v)
    except ValueError:
        c = None
    if c is not None:
        c = (c.astype(np.float32) * np.float32(beta)).astype(c.dtype) if beta != 1.0 else c
        c2 = c.reshape((1,) * max(0, 2 - c.ndim) + c.shape)
        if c2.ndim == 2 and c2.shape[0] == 1 and c2.shape[1] in (1, n):
            bias = np.ascontiguousarray(np.broadcast_to(c2[0], (n,)))
            v = add_constant(home, bias, f"{c_v.name}_bias")
            return v, None, v.const_nbytes()
        if beta == 1.0:
            return None, c_v, 0
        v = add_constant(home, c, f"{c_v.name}_scaled")
        return None, v, v.const_nbytes()
    if beta == 1.0:
        return None, c_v, 0
    elem = c_v.elem_type() or onnx.TensorProto.FLOAT
    beta_v = add_constant(
        graph, np.asarray(beta, dtype=helper.tensor_dtype_to_np_dtype(elem)), f"{c_v.name}_beta"
    )
    mul = graph.add_node("Mul", [c_v, beta_v], name=f"{c_v.name}_beta_mul", provenance=PROVENANCE)
    return None, mul.output(0), beta_v.const_nbytes()


def _drop_if_unused(w: Value) -> bool:
    """Delete the float weight if nothing reads it any more; True when it is gone."""
    if w.num_uses() or w.is_graph_output():
        return False
    g = w.graph
    if g is not None and g.initializers.get(w.name) is w:
        g.remove_initializer(w)
        return True
    p = w.producer
    if p is not None and p.op_type == "Constant" and p.graph is not None:
        p.graph.remove(p)
        return True
    return False
