"""Constant folding falls back to onnx.reference for standard ops without a numpy kernel."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxforge
from onnxforge.equivalence import assert_equivalent
from onnxforge.kernels.reference_fallback import supports
from onnxforge.kernels.registry import get_kernel


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((1, 3, 5, 5)).astype(np.float32), "c"),
        numpy_helper.from_array(np.array([0, 2, 1], np.int64), "idx"),
        numpy_helper.from_array(np.array(4, np.int64), "depth"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "vals"),
    ]
    nodes = [
        helper.make_node("Conv", ["c", "w"], ["cc"]),  # constant Conv: no numpy kernel
        helper.make_node("Add", ["x", "cc"], ["y"]),
        helper.make_node("OneHot", ["idx", "depth", "vals"], ["oh"]),  # onnx.reference rejects 0-d depth
        helper.make_node("Cast", ["oh"], ["ohf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["ohf", "x2"], ["z"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3]),
            helper.make_tensor_value_info("x2", TensorProto.FLOAT, [4, 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 2]),
        ],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _fold_stats(result) -> dict:  # noqa: ANN001
    return next(p.stats for p in result.report.passes if p.name == "constant-folding")


def test_ops_without_kernels_fold_through_onnx_reference():
    assert get_kernel("Conv") is None and supports("Conv", "", 17)
    m = _model()
    r = onnxforge.compile(m, passes=["constant-folding"])
    ops = [n.op_type for n in r.model.graph.node]
    assert "Conv" not in ops and "OneHot" in ops  # OneHot refused cleanly, left for the runtime
    stats = _fold_stats(r)
    assert stats["reference_fallbacks"] == 1 and stats["kernel_refusals"] >= 1
    assert_equivalent(m, r.model, rtol=1e-5, atol=1e-6)


def test_fallback_can_be_disabled_and_never_takes_random_or_qdq_ops():
    m = _model()
    r = onnxforge.compile(m, passes=["constant-folding"], options={"constant-folding": {"reference_fallback": False}})
    assert "Conv" in [n.op_type for n in r.model.graph.node]
    for op in ("RandomNormal", "Dropout", "DequantizeLinear", "QuantizeLinear", "If", "Loop"):
        assert not supports(op, "", 21)
    assert not supports("Conv", "com.microsoft", 1)
