"""Registry contracts and refusals: what kernels must not evaluate, and how they say so."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxforge.kernels.registry import (
    InvalidInputs,
    KernelCall,
    KernelError,
    Unsupported,
    estimate_output_elements,
    evaluate,
    get_kernel,
    registered_ops,
)

f32, i32, i64 = np.float32, np.int32, np.int64


def v(values, dtype=i64):
    return np.array(values, dtype=dtype)


REFUSED = [
    # (id, op, inputs, attrs, opset, expected error)
    ("int-div-by-zero", "Div", [v([1, 2], i32), v([1, 0], i32)], {}, 17, Unsupported),
    ("int-div-overflow", "Div", [v([-(2**31)], i32), v([-1], i32)], {}, 17, Unsupported),
    ("int-mod-by-zero", "Mod", [v([1]), v([0])], {}, 17, Unsupported),
    ("float-mod-without-fmod", "Mod", [v([1.5], f32), v([1.0], f32)], {}, 17, Unsupported),
    ("pow-negative-int-exponent", "Pow", [v([2]), v([-1])], {}, 17, Unsupported),
    ("pow-int-overflow", "Pow", [v([10], i32), v([10], i32)], {}, 17, Unsupported),
    ("cast-nan-to-int", "Cast", [v([np.nan], f32)], {"to": TensorProto.INT32}, 17, Unsupported),
    ("cast-out-of-range", "Cast", [v([3e9], f32)], {"to": TensorProto.INT32}, 17, Unsupported),
    ("cast-negative-to-unsigned", "Cast", [v([-1.0], f32)], {"to": TensorProto.UINT8}, 17, Unsupported),
    ("cast-to-string", "Cast", [v([1.0], f32)], {"to": TensorProto.STRING}, 17, Unsupported),
    ("cast-to-bfloat16", "Cast", [v([1.0], f32)], {"to": TensorProto.BFLOAT16}, 17, Unsupported),
    ("cast-to-float8", "Cast", [v([1.0], f32)], {"to": TensorProto.FLOAT8E4M3FN}, 19, Unsupported),
    ("cast-f64-f16-double-rounding", "Cast", [v([1 + 2**-11 + 2**-40], np.float64)],
     {"to": TensorProto.FLOAT16}, 17, Unsupported),
    ("legacy-broadcast-attr", "Add", [v([1.0], f32), v([1.0], f32)], {"broadcast": 1}, 17, Unsupported),
    ("unknown-attr", "Transpose", [v([[1]])], {"perm": [1, 0], "bogus": 1}, 17, Unsupported),
    ("range-float-accumulation", "Range", [v(0, f32), v(1, f32), v(0.1, f32)], {}, 17, Unsupported),
    ("range-zero-delta", "Range", [v(0), v(5), v(0)], {}, 17, InvalidInputs),
    ("argmax-nan", "ArgMax", [v([1.0, np.nan], f32)], {}, 17, Unsupported),
    ("reducemax-empty", "ReduceMax", [np.zeros((0, 2), f32)], {"axes": [0]}, 13, Unsupported),
    ("gather-out-of-range", "Gather", [v([1, 2, 3]), v([3])], {}, 17, InvalidInputs),
    ("gather-negative-out-of-range", "Gather", [v([1, 2, 3]), v([-4])], {}, 17, InvalidInputs),
    ("reshape-wrong-size", "Reshape", [v([1, 2, 3]), v([2, 2])], {}, 17, InvalidInputs),
    ("reshape-two-minus-one", "Reshape", [v([1, 2, 3, 4]), v([-1, -1])], {}, 17, InvalidInputs),
    ("squeeze-non-one", "Squeeze", [np.zeros((2, 1)), v([0])], {}, 13, InvalidInputs),
    ("unsqueeze-repeated", "Unsqueeze", [v([1]), v([0, 0])], {}, 13, InvalidInputs),
    ("transpose-bad-perm", "Transpose", [np.zeros((2, 3))], {"perm": [0, 0]}, 17, InvalidInputs),
    ("concat-rank-mismatch", "Concat", [v([1]), v([[1]])], {"axis": 0}, 17, InvalidInputs),
    ("concat-dtype-mismatch", "Concat", [v([1]), v([1], i32)], {"axis": 0}, 17, InvalidInputs),
    ("split-sizes-mismatch", "Split", [v([1, 2, 3]), v([1, 1])], {}, 13, InvalidInputs),
    ("slice-zero-step", "Slice", [v([1, 2]), v([0]), v([2]), v([0]), v([0])], {}, 13, InvalidInputs),
    ("expand-incompatible", "Expand", [v([1, 2]), v([3])], {}, 17, InvalidInputs),
    ("add-incompatible", "Add", [np.zeros(2, f32), np.zeros(3, f32)], {}, 17, InvalidInputs),
    ("add-mixed-dtypes", "Add", [np.zeros(2, f32), np.zeros(2, np.float64)], {}, 17, InvalidInputs),
    ("axes-attr-after-13", "Unsqueeze", [v([1])], {"axes": [0]}, 13, Unsupported),
    ("clip-attrs-after-11", "Clip", [v([1.0], f32)], {"min": 0.0}, 11, Unsupported),
    ("bool-arithmetic", "Add", [np.ones(2, bool), np.ones(2, bool)], {}, 17, Unsupported),
    ("string-arithmetic", "Add", [np.array(["a"], object), np.array(["b"], object)], {}, 17, Unsupported),
    ("bfloat16-arithmetic", "Mul", [np.ones(2, helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16))] * 2,
     {}, 17, Unsupported),
    ("sum-of-ints", "Sum", [v([1]), v([2])], {}, 17, Unsupported),
    ("pad-reflect-too-wide", "Pad", [np.zeros((2, 2), f32), v([0, 2, 0, 0])], {"mode": "reflect"}, 13, Unsupported),
    ("bitshift-signed-before-28", "BitShift", [v([1]), v([1])], {"direction": "LEFT"}, 17, Unsupported),
]


@pytest.mark.parametrize(("cid", "op", "inputs", "attrs", "opset", "error"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals(cid, op, inputs, attrs, opset, error):
    with pytest.raises(error):
        evaluate(op, inputs, attrs, opset=opset)


def test_errors_are_kernel_errors():
    assert issubclass(Unsupported, KernelError) and issubclass(InvalidInputs, KernelError)


def test_unknown_op_and_custom_domain_are_unsupported():
    assert get_kernel("RandomNormal") is None
    assert get_kernel("DequantizeLinear") is None  # folding it would undo QDQ quantization
    assert get_kernel("Add", "com.microsoft") is None
    assert get_kernel("Add", "ai.onnx") is not None
    with pytest.raises(Unsupported):
        evaluate("Add", [v([1]), v([1])], opset=17, domain="custom")
    with pytest.raises(Unsupported):
        evaluate("NoSuchOp", [], opset=17)


def test_min_opset_respected():
    assert get_kernel("Add", opset=6) is None  # legacy broadcast semantics
    assert get_kernel("Add", opset=7) is not None
    with pytest.raises(Unsupported):
        evaluate("Add", [v([1]), v([1])], opset=6)


def test_no_random_or_stateful_ops_registered():
    forbidden = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "Dropout", "QuantizeLinear", "DequantizeLinear", "If", "Loop", "Scan", "Constant"}
    assert forbidden.isdisjoint(registered_ops())


def test_outputs_are_owned_copies():
    x = np.arange(6, dtype=f32)
    (ident,) = evaluate("Identity", [x], opset=17)
    (resh,) = evaluate("Reshape", [x, v([2, 3])], opset=17)
    (tr,) = evaluate("Transpose", [x.reshape(2, 3)], opset=17)
    for out in (ident, resh, tr):
        assert not np.may_share_memory(out, x)
        assert out.flags.c_contiguous and out.flags.owndata
    x[0] = 100
    assert ident[0] == 0 and resh[0, 0] == 0


def test_scalar_results_are_arrays():
    (y,) = evaluate("Add", [v(1, f32), v(2, f32)], opset=17)
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == f32


def test_wrong_output_count_is_invalid():
    with pytest.raises(InvalidInputs):
        evaluate("Add", [v([1]), v([1])], opset=17, num_outputs=2)


def test_size_estimates_do_not_compute():
    huge = v([1 << 20, 1 << 20])
    assert estimate_output_elements(KernelCall("ConstantOfShape", [huge], {}, 17)) == 1 << 40
    assert estimate_output_elements(KernelCall("Expand", [np.zeros((1, 3), f32), v([1 << 30, 1])], {}, 17)) == 3 << 30
    assert estimate_output_elements(KernelCall("Tile", [np.zeros((2, 3), f32), v([1000, 1000])], {}, 17)) == 6_000_000
    assert estimate_output_elements(KernelCall("Add", [np.zeros((4096, 1), f32), np.zeros(4096, f32)], {}, 17)) == 1 << 24
    assert estimate_output_elements(KernelCall("MatMul", [np.zeros((5000, 1), f32), np.zeros((1, 5000), f32)], {}, 17)) == 25_000_000
    assert estimate_output_elements(KernelCall("Range", [v(0), v(1 << 40), v(1)], {}, 17)) == 1 << 40
    assert estimate_output_elements(KernelCall("Gather", [np.zeros((10, 4), f32), np.zeros(1000, i64)], {}, 17)) == 4000
    assert estimate_output_elements(KernelCall("Transpose", [np.zeros((2, 3))], {}, 17)) is None
    with pytest.raises(KernelError):
        estimate_output_elements(KernelCall("Expand", [np.zeros(2), v([3])], {}, 17))


def test_shape_kernels_accept_zero_stride_placeholders():
    placeholder = np.broadcast_to(np.zeros((), np.uint8), (1 << 20, 1 << 20, 3))
    assert get_kernel("Shape").shape_only and get_kernel("Size").shape_only
    (shape,) = evaluate("Shape", [placeholder], {"start": 1}, opset=15)
    (size,) = evaluate("Size", [placeholder], opset=17)
    assert shape.tolist() == [1 << 20, 3] and int(size) == 3 << 40


def test_split_uneven_equal_parts_is_invalid_before_18():
    with pytest.raises(InvalidInputs):
        evaluate("Split", [np.arange(3)], opset=13, num_outputs=2)


def test_split_opset18_uneven_num_outputs():
    outs = evaluate("Split", [np.arange(7)], {"num_outputs": 3}, opset=18, num_outputs=3)
    assert [o.tolist() for o in outs] == [[0, 1, 2], [3, 4, 5], [6]]
