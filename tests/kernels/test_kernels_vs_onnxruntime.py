"""Every kernel against onnxruntime on the same inputs: same dtype, same shape, same values
(bit-exact unless the case names a tolerance)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxforge.kernels.registry import evaluate, registered_ops

rng = np.random.default_rng(0)
f32, f16, f64, i32, i64 = np.float32, np.float16, np.float64, np.int32, np.int64


def _ort(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any], opset: int, nout: int) -> list[np.ndarray]:
    names = ["" if x is None else f"in{i}" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(nout)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "case",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
         for n, x in zip(names, inputs) if x is not None],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: x for n, x in zip(names, inputs) if x is not None})


def _a(*shape: int, dtype: Any = f32, lo: int = -5, hi: int = 6) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(lo, hi, shape).astype(dtype)


def _v(values: Any, dtype: Any = i64) -> np.ndarray:
    return np.array(values, dtype=dtype)


# (id, op, inputs, attrs, opset, num_outputs, tolerance or None for exact)
CASES: list[tuple[str, str, list[np.ndarray | None], dict[str, Any], int, int, float | None]] = []


def case(cid: str, op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None,
         opset: int = 17, nout: int = 1, tol: float | None = None) -> None:
    CASES.append((cid, op, inputs, attrs or {}, opset, nout, tol))


# ---- unary ----------------------------------------------------------------------------------
nan_vals = np.array([np.nan, -1.5, 0.0, -0.0, 2.5, np.inf, -np.inf], f32)
for op in ("Abs", "Neg", "Ceil", "Floor", "Round", "Sign", "Relu", "IsNaN"):
    case(f"{op}-f32-special", op, [nan_vals])
case("Round-halves", "Round", [np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999], f32)])
for op in ("Abs", "Neg", "Sign", "Relu"):
    case(f"{op}-i32", op, [_a(3, 4, dtype=i32)], opset=14)
case("Abs-u8", "Abs", [_a(5, dtype=np.uint8, lo=0, hi=255)])
case("Sqrt-f32", "Sqrt", [np.abs(_a(3, 5))])
case("Reciprocal-f32", "Reciprocal", [_a(3, 5)])
for op in ("Exp", "Log", "Sin", "Cos", "Tanh", "Sigmoid", "Erf"):
    x = np.abs(_a(4, 6)) + 0.1 if op == "Log" else _a(4, 6)
    case(f"{op}-f32", op, [x], tol=1e-6)
    if op != "Erf":  # onnxruntime has no double Erf
        case(f"{op}-f64", op, [x.astype(f64)], tol=1e-12)
case("Exp-f16", "Exp", [_a(8, dtype=f16)], tol=1e-3)
case("Not", "Not", [_a(2, 3, dtype=bool)])
case("IsInf-default", "IsInf", [nan_vals], opset=17)
case("IsInf-pos", "IsInf", [nan_vals], {"detect_negative": 0})
case("IsInf-neg", "IsInf", [nan_vals], {"detect_positive": 0})
case("BitwiseNot-u8", "BitwiseNot", [_a(6, dtype=np.uint8, lo=0, hi=255)], opset=18)
case("BitwiseNot-i32", "BitwiseNot", [_a(6, dtype=i32)], opset=18)
case("Identity-str", "Identity", [np.array(["a", "bc"], dtype=object)])

# ---- binary / variadic -------------------------------------------------------------------------
for op in ("Add", "Sub", "Mul", "Div"):
    case(f"{op}-f32-bcast", op, [_a(2, 3, 4), _a(3, 1)])
    case(f"{op}-f16", op, [_a(5, dtype=f16), _a(5, dtype=f16)])
    case(f"{op}-i64", op, [_a(4, 3, dtype=i64), _a(3, dtype=i64, lo=1, hi=4)])
case("Add-i8-wrap", "Add", [_v([120, -120], np.int8), _v([10, -10], np.int8)], opset=14)
case("Div-int-trunc", "Div", [_v([-7, 7, -7, 7, 0, -1], i32), _v([2, -2, -2, 2, 3, 5], i32)])
case("Div-u32", "Div", [_v([7, 9], np.uint32), _v([2, 4], np.uint32)])
case("Div-f32-by-zero", "Div", [_v([1, -1, 0], f32), _v([0, 0, 0], f32)])
case("Mod-int", "Mod", [_v([-7, 7, -7, 7, 5], i32), _v([2, -2, -2, 2, 5], i32)])
case("Mod-int-fmod", "Mod", [_v([-7, 7, -7, 7], i64), _v([2, -2, -2, 2], i64)], {"fmod": 1})
case("Mod-f32-fmod", "Mod", [_v([-7.5, 7.5, 3.25], f32), _v([2, -2, 0.5], f32)], {"fmod": 1})
case("Pow-f32", "Pow", [np.abs(_a(3, 4)), _a(4)], tol=1e-6)
case("Pow-f32-int-exp", "Pow", [_a(5), _v([0, 1, 2, 3, 4], i64)], tol=1e-6)
case("Pow-i64", "Pow", [_v([2, -3, 5, 0], i64), _v([10, 3, 0, 4], i64)])
case("BitShift-left", "BitShift", [_v([1, 3, 255], np.uint8), _v([1, 2, 1], np.uint8)], {"direction": "LEFT"})
case("BitShift-right", "BitShift", [_v([16, 255, 7], np.uint32), _v([2, 4, 1], np.uint32)], {"direction": "RIGHT"})
for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
    case(f"{op}-i32", op, [_a(4, dtype=i32, lo=-100, hi=100), _a(4, dtype=i32, lo=-100, hi=100)], opset=18)
for op in ("Max", "Min", "Sum"):
    case(f"{op}-3-bcast", op, [_a(2, 3), _a(3), _a(1, 1)])
    case(f"{op}-1", op, [_a(2, 3)])
    if op != "Sum":  # Sum is float-only
        case(f"{op}-i32", op, [_a(2, 3, dtype=i32), _a(3, dtype=i32)], opset=13)
case("Max-nan", "Max", [nan_vals, np.zeros(7, f32)])
case("Min-nan", "Min", [np.zeros(7, f32), nan_vals])
case("Mean-3", "Mean", [_a(2, 3), _a(3), _a(2, 1)])
for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
    case(f"{op}-i64", op, [_a(3, 4, dtype=i64, lo=0, hi=3), _a(4, dtype=i64, lo=0, hi=3)])
    case(f"{op}-f32-nan", op, [nan_vals, np.zeros(7, f32)])
case("Equal-str", "Equal", [np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object)], opset=19)
for op in ("And", "Or", "Xor"):
    case(op, op, [_a(2, 3, dtype=bool), _a(3, dtype=bool)])
case("Where", "Where", [_a(2, 3, dtype=bool), _a(2, 3), _a(3)])
case("Where-i64", "Where", [_a(3, dtype=bool), _a(3, dtype=i64), _v(7, i64)])
case("Clip-11", "Clip", [nan_vals, _v(-1, f32), _v(1, f32)], opset=11)
case("Clip-min-only", "Clip", [_a(6), _v(0, f32)], opset=13)
case("Clip-max-only", "Clip", [_a(6), None, _v(0.5, f32)], opset=13)
case("Clip-int", "Clip", [_a(6, dtype=i64), _v(-2, i64), _v(2, i64)], opset=13)
case("Clip-inverted", "Clip", [_a(6), _v(1, f32), _v(-1, f32)], opset=13)
case("Clip-6-attrs", "Clip", [_a(6)], {"min": -0.5, "max": 0.5}, opset=6)

# ---- casts -----------------------------------------------------------------------------------
floats = np.array([0.0, -0.0, 2.7, -2.7, 100.5, -100.5, 1e-3], f32)
for to, name in [(TensorProto.INT32, "i32"), (TensorProto.INT8, "i8"), (TensorProto.INT64, "i64"),
                 (TensorProto.FLOAT16, "f16"), (TensorProto.DOUBLE, "f64"), (TensorProto.BOOL, "bool")]:
    case(f"Cast-f32-{name}", "Cast", [floats], {"to": to})
case("Cast-f32-u8", "Cast", [np.array([0, 2.9, 255.2], f32)], {"to": TensorProto.UINT8})
case("Cast-nan-bool", "Cast", [nan_vals], {"to": TensorProto.BOOL})
case("Cast-i64-i8-wrap", "Cast", [_v([200, -129, 127, 256])], {"to": TensorProto.INT8})
case("Cast-i64-f32", "Cast", [_v([2**40 + 1, -3, 2**24 + 1])], {"to": TensorProto.FLOAT})
case("Cast-bool-f32", "Cast", [_a(5, dtype=bool)], {"to": TensorProto.FLOAT})
case("Cast-f16-round", "Cast", [np.array([1 + 2**-10 + 2**-11, 65519.0, 65520.0, 1e-8], f32)], {"to": TensorProto.FLOAT16})
case("Cast-19-saturate", "Cast", [floats], {"to": TensorProto.INT32, "saturate": 1}, opset=19)
case("CastLike", "CastLike", [floats, _v([0], i32)], opset=15)

# ---- shape and data movement ------------------------------------------------------------------
x234 = _a(2, 3, 4)
case("Shape", "Shape", [x234])
case("Shape-start-end", "Shape", [x234], {"start": -2, "end": 10}, opset=15)
case("Shape-empty-slice", "Shape", [x234], {"start": 2, "end": 1}, opset=15)
case("Size", "Size", [x234])
case("Reshape-0-and-neg1", "Reshape", [x234, _v([0, -1])])
case("Reshape-allowzero", "Reshape", [np.zeros((0, 3), f32), _v([3, 0])], {"allowzero": 1}, opset=14)
case("Reshape-scalar", "Reshape", [_v([5.0], f32), _v([], i64)])
case("Flatten", "Flatten", [x234], {"axis": 2})
case("Flatten-0", "Flatten", [x234], {"axis": 0})
case("Flatten-neg", "Flatten", [x234], {"axis": -1}, opset=13)
case("Squeeze-13", "Squeeze", [_a(1, 3, 1), _v([-1])], opset=13)
case("Squeeze-13-all", "Squeeze", [_a(1, 3, 1)], opset=13)
case("Squeeze-11", "Squeeze", [_a(1, 3, 1)], {"axes": [0]}, opset=11)
case("Unsqueeze-13", "Unsqueeze", [_a(3, 4), _v([0, -1])], opset=13)
case("Unsqueeze-11", "Unsqueeze", [_a(3, 4)], {"axes": [1, 3]}, opset=11)
case("Unsqueeze-scalar", "Unsqueeze", [_v(7), _v([0])], opset=13)
case("Transpose", "Transpose", [x234], {"perm": [2, 0, 1]})
case("Transpose-default", "Transpose", [x234])
case("Concat", "Concat", [_a(2, 3), _a(1, 3), _a(0, 3)], {"axis": 0})
case("Concat-neg-i64", "Concat", [_v([1, 2]), _v([3])], {"axis": -1})
case("Split-13-sizes", "Split", [_a(6, 2), _v([1, 2, 3])], {"axis": 0}, opset=13, nout=3)
case("Split-13-equal", "Split", [_a(2, 6)], {"axis": 1}, opset=13, nout=3)
case("Split-11-attr", "Split", [_a(5, 2)], {"split": [2, 3]}, opset=11, nout=2)
case("Split-18-num-outputs", "Split", [_a(7, 2)], {"num_outputs": 3}, opset=18, nout=3)
for starts, ends, axes, steps in [
    ([1], [3], [0], [1]),
    ([0, 1], [2, 100], [0, 2], [1, 2]),
    ([-1], [-100], [1], [-1]),
    ([10], [-10], [2], [-2]),
    ([-2**63], [2**63 - 1], [0], [1]),
    ([2**63 - 1], [-2**63], [2], [-1]),
    ([0], [0], [0], [1]),
]:
    case(f"Slice-{starts}-{ends}-{axes}-{steps}", "Slice",
         [x234, _v(starts), _v(ends), _v(axes), _v(steps)], opset=13)
case("Slice-no-axes", "Slice", [x234, _v([1, 1], i32), _v([2, 3], i32)], opset=13)
case("Slice-1-attrs", "Slice", [x234], {"starts": [0, 1], "ends": [1, 1000], "axes": [0, 2]}, opset=9)
case("Gather-axis1-neg", "Gather", [x234, _v([[0, -1], [2, 1]])], {"axis": 1})
case("Gather-scalar-idx", "Gather", [_v([5, 6, 7]), _v(-1)], {"axis": 0})
case("Gather-i32-idx", "Gather", [x234, _v([1], i32)], {"axis": -1}, opset=13)
case("GatherElements", "GatherElements", [_a(3, 3), _v([[1, 2, 0], [2, 0, 0]])], {"axis": 0})
case("GatherElements-neg", "GatherElements", [_a(2, 4), _v([[-1, 0], [1, 2]])], {"axis": 1})
case("Expand", "Expand", [_a(3, 1), _v([2, 1, 4])])
case("Expand-smaller-shape", "Expand", [_a(2, 3), _v([3])])
case("Tile", "Tile", [_a(2, 3), _v([2, 1])])
case("ConstantOfShape-default", "ConstantOfShape", [_v([2, 3])])
case("ConstantOfShape-i64", "ConstantOfShape", [_v([4])],
     {"value": helper.make_tensor("v", TensorProto.INT64, [1], [7])})
case("ConstantOfShape-scalar", "ConstantOfShape", [_v([], i64)],
     {"value": helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])})
case("ConstantOfShape-bool", "ConstantOfShape", [_v([2, 0])],
     {"value": helper.make_tensor("v", TensorProto.BOOL, [1], [True])})
case("Range-int", "Range", [_v(3), _v(10), _v(3)])
case("Range-int-neg", "Range", [_v(10, i32), _v(4, i32), _v(-2, i32)])
case("Range-empty", "Range", [_v(10), _v(4), _v(2)])
case("Range-float-exact", "Range", [_v(0, f32), _v(64, f32), _v(2, f32)])
case("Range-float-half", "Range", [_v(-1, f32), _v(1, f32), _v(0.25, f32)])
case("Pad-constant", "Pad", [_a(2, 3), _v([1, 0, 0, 2]), _v(9, f32)], opset=13)
case("Pad-negative", "Pad", [_a(3, 4), _v([-1, 1, 0, -2])], opset=13)
case("Pad-edge", "Pad", [_a(2, 3), _v([1, 2, 1, 0])], {"mode": "edge"}, opset=13)
case("Pad-reflect", "Pad", [_a(3, 4), _v([2, 1, 0, 3])], {"mode": "reflect"}, opset=13)
case("Pad-wrap", "Pad", [_a(3, 4), _v([2, 1, 1, 3])], {"mode": "wrap"}, opset=19)
case("Pad-axes", "Pad", [_a(2, 3, 4), _v([1, 2]), None, _v([-1])], opset=18)
case("Pad-2-attrs", "Pad", [_a(2, 3)], {"pads": [0, 1, 1, 0], "value": 2.0}, opset=2)
case("Trilu-upper", "Trilu", [_a(2, 3, 4)], opset=14)
case("Trilu-lower-k", "Trilu", [_a(4, 3), _v(-1)], {"upper": 0}, opset=14)
case("Trilu-bool", "Trilu", [np.ones((3, 3), bool), _v(1)], opset=14)
case("CumSum", "CumSum", [_a(3, 4), _v(1)])
case("CumSum-excl-rev", "CumSum", [_a(3, 4, dtype=i64), _v(-2, i32)], {"exclusive": 1, "reverse": 1})
case("CumSum-excl", "CumSum", [_a(5), _v(0)], {"exclusive": 1})
case("NonZero", "NonZero", [_a(3, 4, dtype=i32, lo=0, hi=2)])

# ---- reductions and linear algebra ----------------------------------------------------------
for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
    tol = None if op in ("ReduceMax", "ReduceMin") else 1e-6
    case(f"{op}-attr-axes", op, [x234], {"axes": [0, -1], "keepdims": 0}, opset=11 if op != "ReduceSum" else 12, tol=tol)
    case(f"{op}-input-axes", op, [x234, _v([1])], opset=18, tol=tol)
    case(f"{op}-all", op, [x234], opset=18, tol=tol)
    case(f"{op}-noop", op, [x234, _v([], i64)], {"noop_with_empty_axes": 1}, opset=18, tol=tol)
case("ReduceSum-13", "ReduceSum", [x234, _v([-2])], {"keepdims": 0}, opset=13, tol=1e-6)
case("ReduceSum-i64", "ReduceSum", [_a(3, 4, dtype=i64)], {"axes": [1]}, opset=11)
case("ReduceMax-nan", "ReduceMax", [nan_vals.reshape(1, 7)], {"axes": [1]}, opset=13)
case("ReduceMax-bool", "ReduceMax", [_a(2, 3, dtype=bool), _v([1])], opset=20)
for op in ("ArgMax", "ArgMin"):
    ties = np.array([[1, 3, 3, 0], [2, 2, 1, 1]], f32)
    case(f"{op}", op, [ties], {"axis": 1})
    case(f"{op}-last", op, [ties], {"axis": 1, "select_last_index": 1, "keepdims": 0})
    case(f"{op}-i64", op, [_a(3, 4, dtype=i64)], {"axis": -2})
case("MatMul-2d", "MatMul", [_a(3, 8), _a(8, 5)], tol=1e-5)
case("MatMul-batched-bcast", "MatMul", [_a(2, 1, 3, 4), _a(5, 4, 2)], tol=1e-5)
case("MatMul-vec-mat", "MatMul", [_a(4), _a(4, 3)], tol=1e-5)
case("MatMul-mat-vec", "MatMul", [_a(2, 3, 4), _a(4)], tol=1e-5)
case("MatMul-vec-vec", "MatMul", [_a(4), _a(4)], tol=1e-5)
case("MatMul-i64", "MatMul", [_a(3, 4, dtype=i64), _a(4, 2, dtype=i64)])
case("MatMul-f64", "MatMul", [_a(3, 4, dtype=f64), _a(4, 2, dtype=f64)], tol=1e-12)
case("Gemm", "Gemm", [_a(4, 3), _a(5, 4), _a(5)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, tol=1e-5)
case("Gemm-no-C", "Gemm", [_a(2, 3), _a(3, 4)], opset=13, tol=1e-5)
case("Gemm-C-scalar", "Gemm", [_a(2, 3), _a(3, 4), _v(1.5, f32)], tol=1e-5)


@pytest.mark.parametrize(("cid", "op", "inputs", "attrs", "opset", "nout", "tol"), CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_onnxruntime(cid, op, inputs, attrs, opset, nout, tol):
    expected = _ort(op, inputs, attrs, opset, nout)
    got = evaluate(op, inputs, attrs, opset=opset, num_outputs=nout)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        e = np.asarray(e)
        if e.dtype.kind in "OU":
            assert g.dtype == object or g.dtype.kind == "U"
            assert g.shape == e.shape and [str(v) for v in g.ravel()] == [str(v) for v in e.ravel()]
            continue
        assert g.dtype == e.dtype, f"{cid}: dtype {g.dtype} vs onnxruntime {e.dtype}"
        assert g.shape == e.shape, f"{cid}: shape {g.shape} vs onnxruntime {e.shape}"
        if tol is None:
            np.testing.assert_array_equal(g, e, err_msg=cid)
            if g.dtype.kind == "f":  # signed zeros too
                np.testing.assert_array_equal(np.signbit(g), np.signbit(e), err_msg=cid)
        else:
            np.testing.assert_allclose(g.astype(f64), e.astype(f64), rtol=tol, atol=tol, err_msg=cid)


def test_every_registered_op_has_a_conformance_case():
    covered = {c[1] for c in CASES}
    assert set(registered_ops()) - covered == set()
