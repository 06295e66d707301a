"""Cost formulas of the matrix-product operators: convolutions, Gemm, MatMul, Einsum and their
quantized and onnxruntime-fused forms.

MACs are the multiply-accumulates of the product itself:

* Conv: ``out_elements * (C_in / group) * prod(kernel)``; ConvTranspose:
  ``in_elements * (C_out / group) * prod(kernel)`` (each input element is scattered through the
  kernel).
* Gemm / MatMul: ``out_elements * K``. MatMulNBits: the same, with ``K`` and ``N`` attributes.
* Einsum: the product of the sizes of every index (and broadcast ``...`` dimension) in the
  equation, which is the naive loop nest; for two operands that is exact.

FLOPs are ``2 * MACs`` plus one operation per output element for a bias, plus what the fused
forms add (activation, requantization: 3 per output element, dequantization: 2 per element).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from onnxforge.kernels.costs.formula import (
    MATMUL,
    MS_DOMAIN,
    VECTOR,
    CostCall,
    FormulaSet,
    MissingShape,
    OpCost,
)
from onnxforge.kernels.costs.pointwise import activation_flops

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()

#: Per-output-element operations of requantizing an int32 accumulator (scale, round, clamp).
REQUANT_FLOPS = 3
#: Per-element operations of a DequantizeLinear (subtract zero point, scale).
DEQUANT_FLOPS = 2
#: Per-element operations of DynamicQuantizeLinear (min/max scan, scale, round+clamp, ...).
DYNAMIC_QUANT_FLOPS = 5


def _conv_macs(call: CostCall, w_index: int) -> int:
    y = call.require_output(0)
    w = call.require_input(w_index)
    if w.rank < 2 or w.shape[0] == 0:
        raise MissingShape(f"{call.op_type}: weight shape {w.shape} is not a convolution weight")
    return y.numel * (w.numel // w.shape[0])


def _bias_flops(call: CostCall, index: int) -> int:
    return call.require_output(0).numel if call.input(index) is not None else 0


def conv_tap_fraction(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], y_shape: tuple[int, ...], attrs: Mapping[str, Any],
    *, channels_last: bool = False,
) -> float:
    """Fraction of a convolution's kernel taps that land inside its input rather than in the
    padding, over every output position (1.0 without padding).

    The MAC count charges every tap, as papers and libraries count. Direct (depthwise) kernels
    skip the taps in the padding, so their work is this fraction of it: a 5x5 depthwise
    convolution over a 2-row feature map (padding 2) reads 2 of its 5 kernel rows, and
    onnxruntime runs it 2.9x faster than one over a square map with as many positions.
    Each spatial axis counts, per output position, the taps ``o * stride - pad_begin + t *
    dilation`` inside ``[0, size)``; the axes multiply. ``auto_pad`` SAME_* splits the total
    padding as ONNX does. Shapes that do not fit (unknown or mismatched ranks) give 1.0.
    """
    spatial = len(w_shape) - 2
    if spatial < 1 or len(x_shape) != spatial + 2 or len(y_shape) != spatial + 2:
        return 1.0
    xs = x_shape[1:-1] if channels_last else x_shape[2:]
    ys = y_shape[1:-1] if channels_last else y_shape[2:]
    ks = w_shape[2:]
    if any(not isinstance(d, int) or d <= 0 for d in (*xs, *ys, *ks)):
        return 1.0
    strides = list(attrs.get("strides") or [1] * spatial)
    dilations = list(attrs.get("dilations") or [1] * spatial)
    pads = list(attrs.get("pads") or [0] * (2 * spatial))
    auto_pad = str(attrs.get("auto_pad") or "NOTSET")
    fraction = 1.0
    for i in range(spatial):
        size, out, k, s, d = xs[i], ys[i], ks[i], int(strides[i]), int(dilations[i])
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad == "VALID":
            begin = 0
        else:
            begin = int(pads[i]) if len(pads) == 2 * spatial else 0
        first = [o * s - begin for o in range(out)]  # position of tap 0, per output
        inside = 0
        for start in first:
            # taps t with 0 <= start + t*d < size
            lo = (-start + d - 1) // d if start < 0 else 0
            hi = min(k, (size - 1 - start) // d + 1) if start < size else 0
            inside += max(hi - lo, 0)
        fraction *= inside / (out * k)
    return fraction


def panel_positions(positions: float, panel: int) -> float:
    """Output positions (per image) that a convolution's GEMM computes when its kernel runs in
    panels of ``panel`` columns.

    onnxruntime runs 1-D convolutions as im2col and a GEMM of the weights by a column buffer
    with one column per output position; MLAS's SGEMM packs that buffer in panels of 16
    columns. A convolution over 2 to 16 output positions therefore costs what one over 16
    costs, and 17 what 32 costs (measured: a 64->64, kernel-3 convolution takes the same time at
    2, 8 and 16 positions and 60% more at 17). One position takes the matrix-vector path and is
    not padded. ``panel`` comes from the calibration (1: no panels, positions unchanged).
    """
    if panel <= 1 or positions <= 1:
        return positions
    return float(math.ceil(positions / panel) * panel)


@FORMULAS.register(["Conv", "ConvInteger"], kind=MATMUL)
def _conv(call: CostCall) -> OpCost:
    macs = _conv_macs(call, 1)
    bias = _bias_flops(call, 2) if call.op_type == "Conv" else 0
    return OpCost(macs, 2 * macs + bias)


@FORMULAS.register("QLinearConv", kind=MATMUL, domain=MS_DOMAIN)  # onnxruntime's (NHWC with channels_last)
@FORMULAS.register("QLinearConv", kind=MATMUL)
def _qlinear_conv(call: CostCall) -> OpCost:
    macs = _conv_macs(call, 3)
    y = call.require_output(0).numel
    return OpCost(macs, 2 * macs + _bias_flops(call, 8) + REQUANT_FLOPS * y)


@FORMULAS.register(["FusedConv", "NhwcConv"], kind=MATMUL, domain=MS_DOMAIN)
def _fused_conv(call: CostCall) -> OpCost:
    macs = _conv_macs(call, 1)
    y = call.require_output(0).numel
    extra = _bias_flops(call, 2) + (y if call.input(3) is not None else 0)
    extra += activation_flops(call.attr("activation"), y)
    return OpCost(macs, 2 * macs + extra)


#: onnxruntime's blocked-channel layout (NCHWc) domain, which its CPU optimizer writes.
NCHWC_DOMAIN = "com.microsoft.nchwc"


@FORMULAS.register("Conv", kind=MATMUL, domain=NCHWC_DOMAIN)
def _nchwc_conv(call: CostCall) -> OpCost:
    """onnxruntime's NCHWc Conv: channels padded to the block (counted as run), an optional
    fused Sum input and activation."""
    macs = _conv_macs(call, 1)
    y = call.require_output(0).numel
    extra = y if call.input(2) is not None else 0
    extra += y if call.input(3) is not None else 0
    return OpCost(macs, 2 * macs + extra + activation_flops(call.attr("activation", ""), y))


@FORMULAS.register("ConvTranspose", kind=MATMUL)
def _conv_transpose(call: CostCall) -> OpCost:
    x = call.require_input(0)
    w = call.require_input(1)
    if w.rank < 2 or w.shape[0] == 0:
        raise MissingShape(f"ConvTranspose: weight shape {w.shape} is not a convolution weight")
    macs = x.numel * (w.numel // w.shape[0])
    return OpCost(macs, 2 * macs + _bias_flops(call, 2))


def _gemm_macs(call: CostCall) -> int:
    a = call.require_input(0)
    y = call.require_output(0)
    if a.rank != 2:
        raise MissingShape(f"Gemm: A has rank {a.rank}")
    k = a.shape[0] if int(call.attr("transA", 0) or 0) else a.shape[1]
    return y.numel * k


@FORMULAS.register("Gemm", kind=MATMUL)
def _gemm(call: CostCall) -> OpCost:
    macs = _gemm_macs(call)
    return OpCost(macs, 2 * macs + _bias_flops(call, 2))


@FORMULAS.register("QGemm", kind=MATMUL, domain=MS_DOMAIN)
def _qgemm(call: CostCall) -> OpCost:
    """onnxruntime's int8 Gemm (A, a_scale, a_zp, B, b_scale, b_zp, C, y_scale, y_zp)."""
    macs = _gemm_macs(call)
    y = call.require_output(0).numel
    return OpCost(macs, 2 * macs + _bias_flops(call, 6) + REQUANT_FLOPS * y)


@FORMULAS.register("FusedGemm", kind=MATMUL, domain=MS_DOMAIN)
def _fused_gemm(call: CostCall) -> OpCost:
    macs = _gemm_macs(call)
    y = call.require_output(0).numel
    return OpCost(macs, 2 * macs + _bias_flops(call, 2) + activation_flops(call.attr("activation"), y))


def _matmul_macs(call: CostCall, a_index: int = 0, trans_a: bool = False) -> int:
    a = call.require_input(a_index)
    y = call.require_output(0)
    if a.rank == 0:
        raise MissingShape(f"{call.op_type}: scalar operand")
    k = a.shape[-2] if trans_a and a.rank >= 2 else a.shape[-1]
    return y.numel * k


@FORMULAS.register(["MatMul", "MatMulInteger"], kind=MATMUL)
def _matmul(call: CostCall) -> OpCost:
    macs = _matmul_macs(call)
    return OpCost(macs, 2 * macs)


@FORMULAS.register("QLinearMatMul", kind=MATMUL)
def _qlinear_matmul(call: CostCall) -> OpCost:
    macs = _matmul_macs(call)
    return OpCost(macs, 2 * macs + REQUANT_FLOPS * call.require_output(0).numel)


@FORMULAS.register("FusedMatMul", kind=MATMUL, domain=MS_DOMAIN)
def _fused_matmul(call: CostCall) -> OpCost:
    macs = _matmul_macs(call, trans_a=bool(int(call.attr("transA", 0) or 0)))
    return OpCost(macs, 2 * macs + call.require_output(0).numel)  # alpha scaling


@FORMULAS.register("MatMulIntegerToFloat", kind=MATMUL, domain=MS_DOMAIN)
def _matmul_integer_to_float(call: CostCall) -> OpCost:
    macs = _matmul_macs(call)
    y = call.require_output(0).numel
    return OpCost(macs, 2 * macs + DEQUANT_FLOPS * y + _bias_flops(call, 6))


@FORMULAS.register("DynamicQuantizeMatMul", kind=MATMUL, domain=MS_DOMAIN)
def _dynamic_quantize_matmul(call: CostCall) -> OpCost:
    macs = _matmul_macs(call)
    a = call.require_input(0).numel
    y = call.require_output(0).numel
    return OpCost(macs, 2 * macs + DYNAMIC_QUANT_FLOPS * a + DEQUANT_FLOPS * y + _bias_flops(call, 4))


@FORMULAS.register("MatMulNBits", kind=MATMUL, domain=MS_DOMAIN)
def _matmul_nbits(call: CostCall) -> OpCost:
    a = call.require_input(0)
    k = int(call.attr("K", 0) or 0) or a.shape[-1]
    n = int(call.attr("N", 0) or 0) or call.require_output(0).shape[-1]
    rows = a.numel // max(k, 1)
    macs = rows * k * n
    # Weights are dequantized once per call (blockwise scale and zero point).
    return OpCost(macs, 2 * macs + DEQUANT_FLOPS * k * n + _bias_flops(call, 5))


@FORMULAS.register("GatherBlockQuantized", kind=VECTOR, domain=MS_DOMAIN)
def _gather_block_quantized(call: CostCall) -> OpCost:
    # Only the gathered rows are dequantized (subtract zero point, scale).
    return OpCost(0, DEQUANT_FLOPS * call.require_output(0).numel)


def _einsum_terms(equation: str, ranks: list[int]) -> tuple[list[str], str | None]:
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise MissingShape(f"Einsum: equation {equation!r} names {len(terms)} operands, node has {len(ranks)}")
    return terms, (rhs if "->" in eq else None)


@FORMULAS.register("Einsum", kind=MATMUL)
def _einsum(call: CostCall) -> OpCost:
    equation = call.attr("equation")
    if isinstance(equation, bytes):
        equation = equation.decode()
    if not isinstance(equation, str):
        raise MissingShape("Einsum: no equation")
    operands = [call.require_input(i) for i in range(len(call.inputs))]
    terms, _ = _einsum_terms(equation, [t.rank for t in operands])
    sizes: dict[str, int] = {}
    ellipsis: list[int] = []
    for term, t in zip(terms, operands):
        letters = term.replace("...", "")
        n_ell = t.rank - len(letters) if "..." in term else 0
        if n_ell < 0:
            raise MissingShape(f"Einsum: operand rank {t.rank} does not fit {term!r}")
        head = term.split("...")[0] if "..." in term else term
        dims = list(t.shape)
        ell_dims = dims[len(head) : len(head) + n_ell]
        rest = dims[: len(head)] + dims[len(head) + n_ell :]
        for letter, d in zip(letters, rest):
            sizes[letter] = max(sizes.get(letter, 1), d)
        # broadcast ellipsis dims right-aligned
        if len(ell_dims) > len(ellipsis):
            ellipsis = [1] * (len(ell_dims) - len(ellipsis)) + ellipsis
        for i, d in enumerate(ell_dims):
            j = len(ellipsis) - len(ell_dims) + i
            ellipsis[j] = max(ellipsis[j], d)
    loop = math.prod(sizes.values()) * math.prod(ellipsis)
    if len(operands) >= 2:
        return OpCost(loop, 2 * loop)
    # One operand: a transpose (no work) or a reduction/trace (one add per input element).
    y = call.require_output(0)
    return OpCost(0, 0 if y.numel == operands[0].numel else operands[0].numel)
