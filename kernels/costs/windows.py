"""Cost formulas of windowed and reducing operators: pooling, reductions, Resize, LRN, TopK,
CumSum, DFT/STFT, RoiAlign and GridSample. None of them has MACs.

* Pooling: one operation per window element per output (comparisons for max, adds for
  average, plus the division); global pooling: one per input element.
* Reductions: one operation per input element (two for ``SumSquare``/``L1``/``L2``, three for
  ``LogSumExp``), plus one per output for a final mean/log/sqrt.
* Resize: nearest costs nothing arithmetic; linear interpolation costs ``3 * (2^k - 1)``
  per output element over ``k`` resized axes (one lerp = subtract, multiply, add), cubic
  ``2 * 4^k``.
* DFT/STFT: ``5 N log2 N`` per complex transform of length ``N`` (the radix-2 FFT count).
"""

from __future__ import annotations

import math

from onnxforge.kernels.costs.formula import CostCall, FormulaSet, MissingShape, OpCost, ints

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()


def _window(call: CostCall) -> int:
    kernel = ints(call.attr("kernel_shape"))
    if not kernel:
        raise MissingShape(f"{call.op_type}: no kernel_shape")
    return math.prod(kernel)


@FORMULAS.register(["MaxPool", "AveragePool"], domain="com.microsoft.nchwc")
@FORMULAS.register(["NhwcMaxPool", "QLinearAveragePool"], domain="com.microsoft")
@FORMULAS.register(["MaxPool", "AveragePool", "LpPool", "MaxRoiPool"])
def _pool(call: CostCall) -> OpCost:
    y = call.require_output(0).numel
    if call.op_type == "MaxRoiPool":
        x = call.require_input(0)
        pooled = ints(call.attr("pooled_shape"), (1, 1))
        window = max(1, (x.shape[2] // max(pooled[0], 1)) * (x.shape[3] // max(pooled[-1], 1)))
        return OpCost(0, y * window)
    per = _window(call)
    if call.op_type == "AveragePool":
        per += 1
    elif call.op_type == "LpPool":
        per = 2 * per + 1
    return OpCost(0, y * per)


@FORMULAS.register(["GlobalAveragePool", "GlobalMaxPool"], domain="com.microsoft.nchwc")
@FORMULAS.register("QLinearGlobalAveragePool", domain="com.microsoft")
@FORMULAS.register(["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def _global_pool(call: CostCall) -> OpCost:
    x = call.require_input(0).numel
    y = call.require_output(0).numel
    if call.op_type == "GlobalAveragePool":
        return OpCost(0, x + y)
    if call.op_type == "GlobalLpPool":
        return OpCost(0, 2 * x + y)
    return OpCost(0, x)


_REDUCE_PER_INPUT = {
    "ReduceSum": 1,
    "ReduceMean": 1,
    "ReduceMax": 1,
    "ReduceMin": 1,
    "ReduceProd": 1,
    "ReduceLogSum": 1,
    "ReduceSumSquare": 2,
    "ReduceL1": 2,
    "ReduceL2": 2,
    "ReduceLogSumExp": 3,
    "ArgMax": 1,
    "ArgMin": 1,
    "CumSum": 1,
    "CumProd": 1,
}
_REDUCE_PER_OUTPUT = {"ReduceMean": 1, "ReduceLogSum": 1, "ReduceL2": 1, "ReduceLogSumExp": 1}


@FORMULAS.register(list(_REDUCE_PER_INPUT))
def _reduce(call: CostCall) -> OpCost:
    x = call.require_input(0).numel
    y = call.require_output(0).numel
    return OpCost(0, _REDUCE_PER_INPUT[call.op_type] * x + _REDUCE_PER_OUTPUT.get(call.op_type, 0) * y)


@FORMULAS.register("Upsample", domain="com.microsoft.nchwc")
@FORMULAS.register(["Resize", "Upsample"])
def _resize(call: CostCall) -> OpCost:
    x = call.require_input(0)
    y = call.require_output(0)
    mode = call.attr("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode == "nearest":
        return OpCost(0, 0)
    k = sum(1 for a, b in zip(x.shape, y.shape) if a != b) if x.rank == y.rank else y.rank
    per = 2 * 4**k if mode == "cubic" else 3 * (2**k - 1)
    return OpCost(0, per * y.numel)


@FORMULAS.register("LRN")
def _lrn(call: CostCall) -> OpCost:
    size = int(call.attr("size", 1) or 1)
    return OpCost(0, (2 * size + 3) * call.require_output(0).numel)


@FORMULAS.register("TopK")
def _topk(call: CostCall) -> OpCost:
    x = call.require_input(0)
    y = call.require_output(0)
    axis = int(call.attr("axis", -1) or -1)
    k = y.shape[axis] if y.rank else 1
    return OpCost(0, x.numel * max(1, math.ceil(math.log2(max(k, 2)))))


def _fft(n: int) -> int:
    return int(5 * n * math.log2(n)) if n > 1 else 0


@FORMULAS.register("DFT")
def _dft(call: CostCall) -> OpCost:
    x = call.require_input(0)
    y = call.require_output(0)
    axis = int(call.attr("axis", 1) or 1)
    if call.opset >= 20 and call.input(2) is not None:
        axis = -2  # the axis is an input from opset 20 on; the common case is the signal axis
    n = max(x.shape[axis] if x.rank > 1 else 1, y.shape[axis] if y.rank > 1 else 1)
    transforms = max(1, (y.numel // 2) // max(n, 1))
    return OpCost(0, transforms * _fft(n))


@FORMULAS.register("STFT")
def _stft(call: CostCall) -> OpCost:
    y = call.require_output(0)  # [batch, frames, bins, 2]
    if y.rank != 4:
        raise MissingShape("STFT: output must have rank 4")
    batch, frames, bins = y.shape[0], y.shape[1], y.shape[2]
    n = 2 * (bins - 1) if int(call.attr("onesided", 1) or 0) else bins
    return OpCost(0, batch * frames * (_fft(max(n, 1)) + n))  # + the window multiply


@FORMULAS.register(["RoiAlign", "GridSample", "AffineGrid"])
def _sampling(call: CostCall) -> OpCost:
    y = call.require_output(0).numel
    if call.op_type == "RoiAlign":
        s = int(call.attr("sampling_ratio", 0) or 0) or 2
        return OpCost(0, y * s * s * 8)
    return OpCost(0, 8 * y)
