"""Elementwise kernels: unary math, broadcasting binary and variadic arithmetic, comparisons,
logic, bit operations, Where, Clip, Cast and CastLike.

Float results keep the input dtype. Transcendental functions are computed in float64 and
rounded once (correctly rounded or within one ulp of what onnxruntime computes). Integer
arithmetic wraps like the runtime does; integer division or modulo by zero and integer
``INT_MIN / -1`` are refused because the runtime crashes or raises on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from onnx import helper

from onnxforge.kernels.checks import (
    BOOL,
    FLOATS,
    INTS,
    NUMERIC,
    PLAIN,
    SIGNED,
    STRING,
    UNSIGNED,
    broadcast_elements,
    require_dtype,
    require_same_dtype,
    scalar,
)
from onnxforge.kernels.kernel import InvalidInputs, KernelCall, KernelSet, Unsupported

#: The kernels this module defines (collected by onnxforge.kernels.table).
KERNELS = KernelSet()

# --------------------------------------------------------------------------------------------
# Unary
# --------------------------------------------------------------------------------------------
_erf = np.frompyfunc(math.erf, 1, 1)


def _in_float64(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Evaluate ``f`` in float64 and round once to the input dtype."""

    def g(x: np.ndarray) -> np.ndarray:
        return np.asarray(f(x.astype(np.float64))).astype(np.float64).astype(x.dtype)

    return g


def _relu(x: np.ndarray) -> np.ndarray:
    # x < 0 ? 0 : x keeps -0.0 and NaN as they are, like onnxruntime.
    return np.where(x < 0, np.zeros((), x.dtype), x)


_UNARY: dict[str, tuple[frozenset[np.dtype], Callable[[np.ndarray], np.ndarray], int]] = {
    # op: (dtypes, function, min_opset)
    "Abs": (NUMERIC, np.abs, 6),
    "Neg": (FLOATS | SIGNED, np.negative, 6),
    "Reciprocal": (FLOATS, _in_float64(lambda x: 1.0 / x), 6),
    "Sqrt": (FLOATS, _in_float64(np.sqrt), 6),
    "Exp": (FLOATS, _in_float64(np.exp), 6),
    "Log": (FLOATS, _in_float64(np.log), 6),
    "Sin": (FLOATS, _in_float64(np.sin), 7),
    "Cos": (FLOATS, _in_float64(np.cos), 7),
    "Tanh": (FLOATS, _in_float64(np.tanh), 6),
    "Sigmoid": (FLOATS, _in_float64(lambda x: 1.0 / (1.0 + np.exp(-x))), 6),
    "Erf": (FLOATS, _in_float64(_erf), 9),
    "Ceil": (FLOATS, np.ceil, 6),
    "Floor": (FLOATS, np.floor, 6),
    "Round": (FLOATS, np.round, 11),  # half to even, like ONNX
    "Sign": (NUMERIC, np.sign, 9),
    "Relu": (FLOATS | SIGNED, _relu, 6),
    "Not": (BOOL, np.logical_not, 1),
    "IsNaN": (FLOATS, np.isnan, 9),
    "BitwiseNot": (INTS, np.invert, 18),
}


def _unary_kernel(op: str) -> None:
    dtypes, fn, min_opset = _UNARY[op]

    @KERNELS.register(op, min_opset=min_opset)
    def kernel(call: KernelCall) -> np.ndarray:
        x = call.require(0)
        require_dtype(call, x, dtypes)
        out = np.asarray(fn(x))
        if op in ("Not", "IsNaN"):
            return out.astype(np.bool_)
        return out.astype(x.dtype, copy=False)


for _op in _UNARY:
    _unary_kernel(_op)


@KERNELS.register("IsInf", attrs={"detect_negative", "detect_positive"}, min_opset=10)
def _isinf(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    require_dtype(call, x, FLOATS)
    neg = bool(call.attr("detect_negative", 1))
    pos = bool(call.attr("detect_positive", 1))
    return (np.isposinf(x) & pos) | (np.isneginf(x) & neg)


# --------------------------------------------------------------------------------------------
# Binary and variadic arithmetic
# --------------------------------------------------------------------------------------------
def _binary_inputs(call: KernelCall, dtypes: frozenset[np.dtype]) -> tuple[np.ndarray, np.ndarray]:
    a, b = call.require(0), call.require(1)
    require_same_dtype(call, [a, b])
    require_dtype(call, a, dtypes)
    return a, b


def _typed(x: np.ndarray | np.generic, dtype: np.dtype) -> np.ndarray:
    return np.asarray(x).astype(dtype, copy=False)


_SIMPLE_BINARY: dict[str, tuple[frozenset[np.dtype], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "Add": (NUMERIC, np.add),
    "Sub": (NUMERIC, np.subtract),
    "Mul": (NUMERIC, np.multiply),
    "BitwiseAnd": (INTS, np.bitwise_and),
    "BitwiseOr": (INTS, np.bitwise_or),
    "BitwiseXor": (INTS, np.bitwise_xor),
}
_BINARY_MIN_OPSET = {"BitwiseAnd": 18, "BitwiseOr": 18, "BitwiseXor": 18}


def _simple_binary_kernel(op: str) -> None:
    dtypes, fn = _SIMPLE_BINARY[op]

    @KERNELS.register(op, min_opset=_BINARY_MIN_OPSET.get(op, 7), output_elements=broadcast_elements)
    def kernel(call: KernelCall) -> np.ndarray:
        a, b = _binary_inputs(call, dtypes)
        return _typed(fn(a, b), a.dtype)


for _op in _SIMPLE_BINARY:
    _simple_binary_kernel(_op)


def _check_int_divisor(call: KernelCall, a: np.ndarray, b: np.ndarray) -> None:
    if (b == 0).any():
        raise Unsupported(f"{call.op_type}: integer division by zero")
    if a.dtype in SIGNED:
        lo = np.iinfo(a.dtype).min
        if ((a == lo) & (b == -1)).any():
            raise Unsupported(f"{call.op_type}: integer overflow ({lo} / -1)")


@KERNELS.register("Div", min_opset=7, output_elements=broadcast_elements)
def _div(call: KernelCall) -> np.ndarray:
    a, b = _binary_inputs(call, NUMERIC)
    if a.dtype in FLOATS:
        return _typed(np.divide(a, b), a.dtype)
    _check_int_divisor(call, a, b)
    if a.dtype in UNSIGNED:
        return _typed(np.floor_divide(a, b), a.dtype)
    q = np.floor_divide(a, b)
    # ONNX integer division truncates toward zero; numpy floors.
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return _typed(q + fix.astype(a.dtype), a.dtype)


@KERNELS.register("Mod", attrs={"fmod"}, min_opset=10, output_elements=broadcast_elements)
def _mod(call: KernelCall) -> np.ndarray:
    a, b = _binary_inputs(call, NUMERIC)
    fmod = int(call.attr("fmod", 0))
    if a.dtype in FLOATS:
        if fmod != 1:
            raise Unsupported("Mod: float inputs with fmod=0")
        return _typed(np.fmod(a, b), a.dtype)
    _check_int_divisor(call, a, b)
    return _typed(np.fmod(a, b) if fmod else np.mod(a, b), a.dtype)


_POW_BASES = FLOATS | frozenset(np.dtype(t) for t in (np.int32, np.int64))


@KERNELS.register("Pow", min_opset=7, output_elements=broadcast_elements)
def _pow(call: KernelCall) -> np.ndarray:
    x, y = call.require(0), call.require(1)
    require_dtype(call, x, _POW_BASES, "base")
    require_dtype(call, y, NUMERIC, "exponent")
    if call.opset < 12 and x.dtype != y.dtype:
        raise InvalidInputs("Pow: base and exponent types differ before opset 12")
    if x.dtype in FLOATS:
        return _typed(np.power(x.astype(np.float64), y.astype(np.float64)), x.dtype)
    if y.dtype not in INTS:
        raise Unsupported("Pow: integer base with float exponent")
    if (y < 0).any():
        raise Unsupported("Pow: integer base with negative exponent")
    approx = np.power(x.astype(np.float64), y.astype(np.float64))
    info = np.iinfo(x.dtype)
    if not np.all((approx >= info.min) & (approx <= info.max)):
        raise Unsupported("Pow: integer overflow")
    return _typed(np.power(x.astype(np.int64), y.astype(np.int64)), x.dtype)


@KERNELS.register("BitShift", attrs={"direction"}, min_opset=11, output_elements=broadcast_elements)
def _bitshift(call: KernelCall) -> np.ndarray:
    x, y = call.require(0), call.require(1)
    require_same_dtype(call, [x, y])
    require_dtype(call, x, UNSIGNED if call.opset < 28 else INTS)
    direction = call.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise InvalidInputs(f"BitShift: direction must be LEFT or RIGHT, got {direction!r}")
    bits = x.dtype.itemsize * 8
    xb, yb = np.broadcast_arrays(x, y)
    in_range = (yb >= 0) & (yb < bits)
    shift = np.where(in_range, yb, 0).astype(x.dtype)
    if direction == "LEFT":
        out = np.where(in_range, np.left_shift(xb, shift), 0)
    else:
        fill = np.where(xb < 0, -1, 0) if x.dtype in SIGNED else np.zeros((), x.dtype)
        out = np.where(in_range, np.right_shift(xb, shift), fill)
    return _typed(out, x.dtype)


def _variadic(call: KernelCall, dtypes: frozenset[np.dtype]) -> list[np.ndarray]:
    xs = call.present()
    if not xs:
        raise InvalidInputs(f"{call.op_type}: no inputs")
    require_same_dtype(call, xs)
    require_dtype(call, xs[0], dtypes)
    return xs


def _fold_left(xs: list[np.ndarray], fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    out = xs[0]
    for x in xs[1:]:
        out = _typed(fn(out, x), xs[0].dtype)
    # A single input still broadcasts to itself: return a copy.
    return np.array(out, copy=True)


@KERNELS.register("Max", min_opset=6, output_elements=broadcast_elements)
def _max(call: KernelCall) -> np.ndarray:
    return _fold_left(_variadic(call, NUMERIC), np.maximum)


@KERNELS.register("Min", min_opset=6, output_elements=broadcast_elements)
def _min(call: KernelCall) -> np.ndarray:
    return _fold_left(_variadic(call, NUMERIC), np.minimum)


@KERNELS.register("Sum", min_opset=6, output_elements=broadcast_elements)
def _sum(call: KernelCall) -> np.ndarray:
    return _fold_left(_variadic(call, FLOATS), np.add)


@KERNELS.register("Mean", min_opset=6, output_elements=broadcast_elements)
def _mean(call: KernelCall) -> np.ndarray:
    xs = _variadic(call, FLOATS)
    total = _fold_left(xs, np.add)
    # onnxruntime multiplies by the reciprocal (within one ulp of the spec's division).
    return _typed(total * np.asarray(1.0 / len(xs), dtype=xs[0].dtype), xs[0].dtype)


# --------------------------------------------------------------------------------------------
# Comparisons and logic
# --------------------------------------------------------------------------------------------
_COMPARE: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], frozenset[np.dtype], int]] = {
    "Equal": (np.equal, PLAIN | STRING, 7),
    "Less": (np.less, NUMERIC, 7),
    "Greater": (np.greater, NUMERIC, 7),
    "LessOrEqual": (np.less_equal, NUMERIC, 12),
    "GreaterOrEqual": (np.greater_equal, NUMERIC, 12),
    "And": (np.logical_and, BOOL, 7),
    "Or": (np.logical_or, BOOL, 7),
    "Xor": (np.logical_xor, BOOL, 7),
}


def _compare_kernel(op: str) -> None:
    fn, dtypes, min_opset = _COMPARE[op]

    @KERNELS.register(op, min_opset=min_opset, output_elements=broadcast_elements)
    def kernel(call: KernelCall) -> np.ndarray:
        a, b = _binary_inputs(call, dtypes)
        if a.dtype in STRING:
            a, b = a.astype(str), b.astype(str)
        return _typed(fn(a, b), np.dtype(np.bool_))


for _op in _COMPARE:
    _compare_kernel(_op)


@KERNELS.register("Where", min_opset=9, output_elements=broadcast_elements)
def _where(call: KernelCall) -> np.ndarray:
    c, x, y = call.require(0), call.require(1), call.require(2)
    require_dtype(call, c, BOOL, "condition")
    require_same_dtype(call, [x, y])
    require_dtype(call, x, PLAIN | STRING)
    return _typed(np.where(c, x, y), x.dtype)


@KERNELS.register("Clip", attrs={"min", "max"}, min_opset=6)
def _clip(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    if call.opset < 11:
        require_dtype(call, x, FLOATS)
        info = np.finfo(x.dtype)
        lo = np.asarray(call.attr("min", float(info.min))).astype(x.dtype)
        hi = np.asarray(call.attr("max", float(info.max))).astype(x.dtype)
    else:
        if call.attrs:
            raise Unsupported("Clip: min/max attributes are not valid from opset 11")
        require_dtype(call, x, NUMERIC)
        lo_in, hi_in = scalar(call, call.input(1), "min"), scalar(call, call.input(2), "max")
        for bound in (lo_in, hi_in):
            if bound is not None and bound.dtype != x.dtype:
                raise InvalidInputs("Clip: min/max must have the input's dtype")
        lo, hi = lo_in, hi_in
    out = x
    if lo is not None:
        out = np.maximum(out, lo)
    if hi is not None:
        out = np.minimum(out, hi)
    return _typed(out, x.dtype)


# --------------------------------------------------------------------------------------------
# Casts
# --------------------------------------------------------------------------------------------
_CASTABLE = PLAIN


def cast_array(call: KernelCall, x: np.ndarray, target: np.dtype) -> np.ndarray:
    """ONNX Cast between numpy-builtin numeric/bool types, refusing implementation-defined cases
    (float to integer out of range, NaN or infinity to integer)."""
    if x.dtype.name in ("int4", "uint4"):  # ml_dtypes' 4-bit integers: exact in int8
        x = x.astype(np.int8)
    require_dtype(call, x, _CASTABLE)
    if target not in _CASTABLE:
        raise Unsupported(f"{call.op_type}: cast to {target} not supported")
    if x.dtype in FLOATS and target in INTS:
        t = np.trunc(x.astype(np.float64))
        info = np.iinfo(target)
        if not np.all(np.isfinite(t)) or not np.all((t >= info.min) & (t <= info.max)):
            raise Unsupported(f"{call.op_type}: float to {target} out of range is implementation-defined")
        # float64 holds every integer the check admitted except near the int64/uint64 limits.
        if target.itemsize == 8 and np.any(np.abs(t) >= 2.0**63):
            raise Unsupported(f"{call.op_type}: float to {target} near the type limit")
        return t.astype(target)
    out = x.astype(target)
    if target == np.float16 and x.dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        # Runtimes convert to float16 through float32; refuse where double rounding differs.
        if not np.array_equal(out, x.astype(np.float32).astype(np.float16), equal_nan=True):
            raise Unsupported(f"{call.op_type}: {x.dtype} to float16 rounding is runtime-dependent")
    return out


def _onnx_dtype(call: KernelCall, elem_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(elem_type)))
    except Exception:
        raise InvalidInputs(f"{call.op_type}: unknown data type {elem_type}") from None


@KERNELS.register("Cast", attrs={"to", "saturate", "round_mode"}, min_opset=6)
def _cast(call: KernelCall) -> np.ndarray:
    # saturate and round_mode only affect float8 targets, which are refused.
    to = call.attr("to")
    if to is None:
        raise InvalidInputs("Cast: attribute 'to' is required")
    return cast_array(call, call.require(0), _onnx_dtype(call, to))


@KERNELS.register("CastLike", attrs={"saturate", "round_mode"}, min_opset=15)
def _castlike(call: KernelCall) -> np.ndarray:
    return cast_array(call, call.require(0), call.require(1).dtype)
