"""Low-rank factorization: the (data-aware) SVD factors, the rewrite of MatMul and Gemm (bias,
alpha/beta and transB kept), the break-even rank, the budget stepping ranks up, and weights
read by other ops left whole."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_helpers import const, make_model, vi

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import to_proto
from onnxforge.passes.compression.low_rank import (
    REPORT_KEY,
    FactorizeLowRank,
    _Factors,
    break_even,
    find_weights,
)
from onnxforge.passmanager import PassContext

RNG = np.random.default_rng(1)


def _low_rank_matrix(k: int, n: int, r: int, noise: float = 0.01) -> np.ndarray:
    return (RNG.standard_normal((k, r)) @ RNG.standard_normal((r, n)) / np.sqrt(r) + noise * RNG.standard_normal((k, n))).astype(np.float32)


def _model() -> onnx.ModelProto:
    w1 = _low_rank_matrix(128, 256, 16)
    w2 = _low_rank_matrix(256, 128, 16).T.copy()  # stored [N, K] for Gemm transB
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0),
    ]
    return make_model(
        nodes, [vi("x", shape=["b", 128])], [vi("y", shape=["b", 128])],
        [const("w1", w1), const("w2", w2), const("b2", RNG.standard_normal(128))],
    )


def _factorize(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, object]:
    ctx = PassContext()
    result = ctx.run(FactorizeLowRank(**{"min_elements": 1000, **options}), modelio.load(model).model)
    assert result.modified
    out = to_proto(result.model)
    onnx.checker.check_model(out, full_check=True)
    return out, ctx.records[REPORT_KEY]


def test_full_rank_factors_rebuild_the_weight_and_whitening_lowers_output_error():
    model = modelio.load(_model()).model
    (w,) = [x for x in find_weights(model, 1000) if x.name == "w1"]
    plain = _Factors(model, {})
    u, v, energy = plain.factors(w, 128)
    np.testing.assert_allclose(u @ v, plain.matrix(w), rtol=1e-4, atol=1e-4)
    assert energy == pytest.approx(1.0)
    x = RNG.standard_normal((512, 128)) * np.linspace(0.01, 3, 128)  # inputs of unequal power
    aware = _Factors(model, {"x": x.T @ x / len(x)})
    m = plain.matrix(w)
    err = [float(np.square(x @ (m - f.factors(w, 8)[0] @ f.factors(w, 8)[1])).mean()) for f in (plain, aware)]
    assert err[1] < err[0] * 0.9, err


def test_matmul_and_gemm_are_rewritten_and_compute_the_factored_product():
    model = _model()
    out, report = _factorize(model, rank_ratio=0.5, steps=0)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("MatMul") == 3 and ops.count("Gemm") == 1
    gemm = next(n for n in out.graph.node if n.op_type == "Gemm")
    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    assert attrs["transB"] == 0 and attrs["alpha"] == 0.5 and attrs["beta"] == 2.0 and gemm.input[2] == "b2"
    ranks = {x.name: x.rank for x in report.layers}
    assert ranks == {"w1": break_even(128, 256) // 2, "w2": break_even(256, 128) // 2}
    assert report.params_after < report.params_before / 1.9
    feeds = {"x": RNG.standard_normal((4, 128)).astype(np.float32)}
    got, want = OrtRunner().run(out, feeds)["y"], OrtRunner().run(model, feeds)["y"]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99  # the weights are nearly rank 16


def test_budget_steps_ranks_up_or_leaves_layers_whole():
    model = _model()
    calib = [{"x": RNG.standard_normal((8, 128)).astype(np.float32)} for _ in range(10)]
    _, loose = _factorize(model, rank_ratio=0.05, calibration=calib)
    _, tight = _factorize(model, rank_ratio=0.05, calibration=calib, min_cosine=0.9999)
    assert tight.stepped and min(tight.output_cosine.values()) >= 0.9999
    assert min(loose.output_cosine.values()) < 0.9999
    assert sum(x.params_after for x in tight.layers) > sum(x.params_after for x in loose.layers)


def test_weights_read_by_other_ops_stay_whole():
    w = _low_rank_matrix(64, 64, 4)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Shape", ["w"], ["s"]),
    ]
    m = make_model(nodes, [vi("x", shape=[1, 64])], [vi("y", shape=[1, 64]), vi("s", TensorProto.INT64, [2])], [const("w", w)])
    ctx = PassContext()
    assert ctx.run(FactorizeLowRank(min_elements=100), modelio.load(m).model).modified is False
