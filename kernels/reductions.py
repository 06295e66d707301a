"""Reduction kernels: ReduceSum, ReduceMean, ReduceProd, ReduceMax, ReduceMin, ArgMax, ArgMin.

Float sums, means and products are accumulated in float64 and rounded once (the runtime's
summation order differs, so results agree within float-reordering tolerance). Integer sums and
products wrap in the input dtype. ``axes`` come from the attribute before the opset that turned
them into an input (13 for ReduceSum, 18 for the others).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxforge.kernels.checks import (
    BOOL,
    FLOATS,
    NUMERIC,
    int_vector,
    is_any_nan,
    normalize_axes,
    normalize_axis,
    require_dtype,
)
from onnxforge.kernels.kernel import InvalidInputs, KernelCall, KernelSet, Unsupported

#: The kernels this module defines (collected by onnxforge.kernels.table).
KERNELS = KernelSet()

_Reducer = Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]


def _float_or_wrap(np_fn: Callable[..., np.ndarray]) -> _Reducer:
    def reduce(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        if x.dtype in FLOATS:
            return np_fn(x.astype(np.float64), axis=axes, keepdims=keepdims).astype(x.dtype)
        return np_fn(x, axis=axes, keepdims=keepdims, dtype=x.dtype)

    return reduce


def _mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    return np.mean(x.astype(np.float64), axis=axes, keepdims=keepdims).astype(x.dtype)


def _extremum(np_fn: Callable[..., np.ndarray]) -> _Reducer:
    def reduce(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np_fn(x, axis=axes, keepdims=keepdims)

    return reduce


#: op -> (first opset taking axes as an input, dtypes, reducer(x, axes, keepdims))
_REDUCE: dict[str, tuple[int, frozenset[np.dtype], _Reducer]] = {
    "ReduceSum": (13, NUMERIC, _float_or_wrap(np.sum)),
    "ReduceProd": (18, NUMERIC, _float_or_wrap(np.prod)),
    "ReduceMean": (18, FLOATS, _mean),
    "ReduceMax": (18, NUMERIC | BOOL, _extremum(np.max)),
    "ReduceMin": (18, NUMERIC | BOOL, _extremum(np.min)),
}


def _reduce_kernel(op: str) -> None:
    axes_input_opset, dtypes, reducer = _REDUCE[op]

    @KERNELS.register(op, attrs={"axes", "keepdims", "noop_with_empty_axes"})
    def kernel(call: KernelCall) -> np.ndarray:
        x = call.require(0)
        require_dtype(call, x, dtypes)
        keepdims = bool(call.attr("keepdims", 1))
        if call.opset < axes_input_opset:
            if "noop_with_empty_axes" in call.attrs:
                raise Unsupported(f"{op}: noop_with_empty_axes is not valid before opset {axes_input_opset}")
            axes_attr = call.attr("axes")
            axes = None if axes_attr is None else [int(a) for a in axes_attr]
            noop = False
        else:
            if "axes" in call.attrs:
                raise Unsupported(f"{op}: axes attribute is not valid from opset {axes_input_opset}")
            axes = int_vector(call, call.input(1), "axes")
            noop = bool(call.attr("noop_with_empty_axes", 0))
        if not axes:
            if noop:
                return x.copy()
            norm = tuple(range(x.ndim))
        else:
            norm = tuple(normalize_axes(call, axes, x.ndim))
        if op in ("ReduceMax", "ReduceMin") and any(x.shape[a] == 0 for a in norm):
            raise Unsupported(f"{op}: reduction over an empty set")
        return np.asarray(reducer(x, norm, keepdims)).astype(x.dtype, copy=False)


for _op in _REDUCE:
    _reduce_kernel(_op)


def _arg_kernel(op: str, np_fn: Callable[..., np.ndarray]) -> None:
    @KERNELS.register(op, attrs={"axis", "keepdims", "select_last_index"})
    def kernel(call: KernelCall) -> np.ndarray:
        x = call.require(0)
        require_dtype(call, x, NUMERIC)
        if is_any_nan(x):
            raise Unsupported(f"{op}: NaN inputs give runtime-dependent indices")
        if x.ndim == 0:
            raise InvalidInputs(f"{op}: input must have rank >= 1")
        axis = normalize_axis(call, call.attr("axis", 0), x.ndim)
        if x.shape[axis] == 0:
            raise InvalidInputs(f"{op}: empty axis")
        keepdims = bool(call.attr("keepdims", 1))
        if int(call.attr("select_last_index", 0)):
            flipped = np.flip(x, axis)
            idx = x.shape[axis] - 1 - np_fn(flipped, axis=axis, keepdims=True)
        else:
            idx = np_fn(x, axis=axis, keepdims=True)
        if not keepdims:
            idx = np.squeeze(idx, axis=axis)
        return np.asarray(idx, dtype=np.int64)


_arg_kernel("ArgMax", np.argmax)
_arg_kernel("ArgMin", np.argmin)
