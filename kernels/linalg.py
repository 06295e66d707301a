"""Matrix-product kernels: MatMul and Gemm.

Float products are computed in float64 and rounded once to the input dtype, so they are at
least as accurate as the runtime's float32 accumulation and agree with it within
float-reordering tolerance. Integer MatMul wraps in the input dtype.
"""

from __future__ import annotations

import numpy as np

from onnxforge.kernels.checks import FLOATS, broadcast_shape, num_elements, require_dtype, require_same_dtype
from onnxforge.kernels.kernel import InvalidInputs, KernelCall, KernelSet

#: The kernels this module defines (collected by onnxforge.kernels.table).
KERNELS = KernelSet()

_MATMUL_TYPES = FLOATS | frozenset(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64))


def _matmul_shape(call: KernelCall) -> tuple[int, ...]:
    a, b = call.require(0), call.require(1)
    if a.ndim == 0 or b.ndim == 0:
        raise InvalidInputs("MatMul: inputs must have rank >= 1")
    sa = (1, *a.shape) if a.ndim == 1 else a.shape
    sb = (*b.shape, 1) if b.ndim == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise InvalidInputs(f"MatMul: inner dimensions differ: {a.shape} @ {b.shape}")
    batch = broadcast_shape(call, [sa[:-2], sb[:-2]])
    out = [*batch, sa[-2], sb[-1]]
    if a.ndim == 1:
        out.pop(-2)
    if b.ndim == 1:
        out.pop(-1)
    return tuple(out)


@KERNELS.register("MatMul", output_elements=lambda call: num_elements(_matmul_shape(call)))
def _matmul(call: KernelCall) -> np.ndarray:
    a, b = call.require(0), call.require(1)
    require_same_dtype(call, [a, b])
    require_dtype(call, a, _MATMUL_TYPES)
    _matmul_shape(call)
    if a.dtype in FLOATS:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    return np.matmul(a, b).astype(a.dtype, copy=False)


def _gemm_operands(call: KernelCall) -> tuple[np.ndarray, np.ndarray]:
    a, b = call.require(0), call.require(1)
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidInputs("Gemm: A and B must be 2-D")
    if int(call.attr("transA", 0)):
        a = a.T
    if int(call.attr("transB", 0)):
        b = b.T
    if a.shape[1] != b.shape[0]:
        raise InvalidInputs(f"Gemm: inner dimensions differ: {a.shape} @ {b.shape}")
    return a, b


def _gemm_elements(call: KernelCall) -> int:
    a, b = _gemm_operands(call)
    return a.shape[0] * b.shape[1]


@KERNELS.register("Gemm", attrs={"alpha", "beta", "transA", "transB"}, min_opset=7, output_elements=_gemm_elements)
def _gemm(call: KernelCall) -> np.ndarray:
    a, b = _gemm_operands(call)
    c = call.input(2)
    require_same_dtype(call, [a, b] + ([c] if c is not None else []))
    require_dtype(call, a, FLOATS)
    alpha, beta = float(call.attr("alpha", 1.0)), float(call.attr("beta", 1.0))
    y = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if c is not None:
        out_shape = (a.shape[0], b.shape[1])
        if broadcast_shape(call, [c.shape, out_shape]) != out_shape:
            raise InvalidInputs(f"Gemm: C of shape {c.shape} does not broadcast to {out_shape}")
        y = y + beta * c.astype(np.float64)
    return y.astype(a.dtype)
