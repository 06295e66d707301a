"""Small matching helpers shared by the fusion rules (commutative operands, scalar constants,
float types, channel-wise constants)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxforge.ir import Node, Value
from onnxforge.rules import MatchFailed, RewriteContext

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})


def other_input(node: Node, v: Value) -> Value:
    """The operand of a binary node that is not ``v`` (fails if ``v`` is not an operand)."""
    a, b = node.input(0), node.input(1)
    if a is v and b is not None:
        return b
    if b is v and a is not None:
        return a
    raise MatchFailed(f"{node.op_type} does not read {v.name!r}")


def split_const(node: Node, rc: RewriteContext) -> tuple[Value, np.ndarray]:
    """For a binary node with one constant operand: (the other operand, the constant)."""
    a, b = node.input(0), node.input(1)
    if a is None or b is None:
        raise MatchFailed(f"{node.op_type} needs two inputs")
    cb = rc.const(b)
    if cb is not None and rc.const(a) is None:
        return a, cb
    ca = rc.const(a)
    if ca is not None and cb is None:
        return b, ca
    raise MatchFailed(f"{node.op_type} does not have exactly one constant operand")


def scalar(arr: np.ndarray | None) -> float | None:
    """The single value of a one-element array, else None."""
    if arr is None or arr.size != 1:
        return None
    return float(arr.reshape(-1)[0])


def require_scalar(arr: np.ndarray | None, expected: float, what: str, rtol: float = 1e-3) -> None:
    s = scalar(arr)
    if s is None or not np.isclose(s, expected, rtol=rtol, atol=0):
        raise MatchFailed(f"{what} is {s if s is not None else 'not a scalar'}, expected {expected:g}")


#: Ops whose output has the element type of their first input.
_SAME_TYPE = frozenset(
    "Add Sub Mul Div Pow Neg Abs Sqrt Exp Log Erf Tanh Sigmoid Relu LeakyRelu Clip HardSigmoid HardSwish "
    "MatMul Gemm Conv ConvTranspose BatchNormalization LayerNormalization Softmax Reshape Transpose Flatten "
    "Squeeze Unsqueeze Identity ReduceMean ReduceSum ReduceMax Gelu MaxPool AveragePool GlobalAveragePool "
    "Concat Slice Gather Expand Pad Reciprocal".split()
)


def elem_type(v: Value | None, depth: int = 8) -> int | None:
    """``v``'s element type, or, when it is not recorded, that of the first input of its
    producer (for type-preserving ops), up to ``depth`` steps back."""
    while v is not None and depth > 0:
        et = v.elem_type()
        if et:
            return et
        p = v.producer
        if p is None or p.op_type not in _SAME_TYPE or not p.is_standard_domain():
            return None
        v = p.input(0) if p.op_type != "Gather" else p.input(0)
        depth -= 1
    return None


def require_float(v: Value | None, what: str) -> int:
    et = elem_type(v)
    if et not in FLOAT_TYPES:
        raise MatchFailed(f"{what} is not a float tensor")
    assert et is not None
    return et


def np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def channel_vector(arr: np.ndarray, rank: int, axis: int, channels: int | None) -> np.ndarray | None:
    """``arr`` as one value per channel along ``axis`` of a rank-``rank`` tensor it broadcasts
    against (scalar arrays repeat), or None when it varies along another axis or would grow the
    other operand's rank."""
    if arr.ndim > rank:
        return None
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    for i, d in enumerate(full.shape):
        if i != axis and d != 1:
            return None
    vec = full.reshape(-1)
    if vec.size == 1:
        return np.full(channels, vec[0], dtype=arr.dtype) if channels else None
    if channels is not None and vec.size != channels:
        return None
    return vec


def reduce_axes(node: Node, rc: RewriteContext) -> list[int]:
    """The axes of a Reduce* node (attribute before opset 18, input from 18), keepdims required."""
    if int(node.attr("keepdims", 1)) != 1:
        raise MatchFailed(f"{node.op_type} does not keep dims")
    axes = node.attr("axes")
    if axes is None and node.input(1) is not None:
        arr = rc.require_const(node.input(1), f"{node.op_type} axes")
        axes = arr.reshape(-1).tolist()
    if axes is None:
        raise MatchFailed(f"{node.op_type} reduces over all axes")
    return [int(a) for a in axes]
