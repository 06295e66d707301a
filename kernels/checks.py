"""Argument checks shared by the kernels: dtype classes, axis normalization, integer inputs.

Only numpy's builtin dtypes are evaluated arithmetically. bfloat16, float8 and 4-bit types
(represented with ``ml_dtypes``) are accepted by pure data-movement kernels only, because their
arithmetic rounding differs between runtimes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from onnxforge.kernels.kernel import InvalidInputs, KernelCall, Unsupported

FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
SIGNED = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
UNSIGNED = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
INTS = SIGNED | UNSIGNED
NUMERIC = FLOATS | INTS
BOOL = frozenset({np.dtype(np.bool_)})
STRING = frozenset({np.dtype(object)})
#: Types with exact numpy semantics: every arithmetic-free kernel handles them.
PLAIN = NUMERIC | BOOL
INDEX = frozenset(np.dtype(t) for t in (np.int32, np.int64))


def require_dtype(call: KernelCall, x: np.ndarray, allowed: frozenset[np.dtype], what: str = "input") -> None:
    """Raise :class:`Unsupported` unless ``x.dtype`` is one of ``allowed``."""
    if x.dtype not in allowed:
        raise Unsupported(f"{call.op_type}: {what} dtype {x.dtype} not supported")


def require_same_dtype(call: KernelCall, arrays: Sequence[np.ndarray]) -> np.dtype:
    """The common dtype of ``arrays``; :class:`InvalidInputs` when they differ (ONNX requires it)."""
    dt = arrays[0].dtype
    for a in arrays[1:]:
        if a.dtype != dt:
            raise InvalidInputs(f"{call.op_type}: inputs have different dtypes {dt} and {a.dtype}")
    return dt


def is_any_nan(x: np.ndarray) -> bool:
    return x.dtype in FLOATS and bool(np.isnan(x).any())


def normalize_axis(call: KernelCall, axis: int, rank: int) -> int:
    """``axis`` in ``[-rank, rank - 1]`` mapped to ``[0, rank - 1]``."""
    a = int(axis)
    if not -rank <= a < rank:
        raise InvalidInputs(f"{call.op_type}: axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def normalize_axes(call: KernelCall, axes: Iterable[int], rank: int) -> list[int]:
    """Distinct normalized axes, in the given order; duplicates are invalid."""
    out = [normalize_axis(call, a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise InvalidInputs(f"{call.op_type}: repeated axes {list(axes)}")
    return out


def int_vector(call: KernelCall, x: np.ndarray | None, what: str) -> list[int] | None:
    """A 1-D (or scalar) int32/int64 input as python ints (None when omitted)."""
    if x is None:
        return None
    if x.dtype not in INDEX:
        raise InvalidInputs(f"{call.op_type}: {what} must be int32 or int64, got {x.dtype}")
    if x.ndim > 1:
        raise InvalidInputs(f"{call.op_type}: {what} must be 1-D, got shape {x.shape}")
    return [int(v) for v in x.reshape(-1)]


def int_scalar(call: KernelCall, x: np.ndarray | None, what: str) -> int | None:
    """A single-element int32/int64 input as a python int (None when omitted)."""
    vals = int_vector(call, x, what)
    if vals is None:
        return None
    if len(vals) != 1:
        raise InvalidInputs(f"{call.op_type}: {what} must have one element, got {len(vals)}")
    return vals[0]


def scalar(call: KernelCall, x: np.ndarray | None, what: str) -> np.ndarray | None:
    """A single-element input as a 0-d array (None when omitted)."""
    if x is None:
        return None
    if x.size != 1:
        raise InvalidInputs(f"{call.op_type}: {what} must be a scalar, got shape {x.shape}")
    return x.reshape(())


def num_elements(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


def broadcast_shape(call: KernelCall, shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Multidirectional (numpy) broadcast of ``shapes``; :class:`InvalidInputs` if incompatible."""
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise InvalidInputs(f"{call.op_type}: shapes {[tuple(s) for s in shapes]} do not broadcast") from None


def broadcast_elements(call: KernelCall) -> int:
    """Output elements of an elementwise operator over its present inputs (an estimator)."""
    return num_elements(broadcast_shape(call, [x.shape for x in call.present()]))
