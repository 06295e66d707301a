"""--verify checks each pipeline the way it declares: lossless pipelines by a tight allclose,
fp16 and int4 by every output's cosine and SQNR against a stated budget."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxforge
from onnxforge.equivalence import check_lossy
from onnxforge.errors import VerificationError
from onnxforge.models.cnn import small_cnn, transformer_block
from onnxforge.pipelines import FP16, INT4, INT8, LOSSLESS, PIPELINES, verification_for

BUILDERS = {"small_cnn": small_cnn, "transformer_block": transformer_block}


def test_each_pipeline_declares_its_verification():
    assert verification_for("optimize") is LOSSLESS and verification_for("lossless") is LOSSLESS
    assert verification_for("fp16") is FP16 and verification_for("int4") is INT4 and verification_for("int8") is INT8
    assert all(not PIPELINES[n].verification.lossless for n in ("fp16", "int4", "int8"))
    assert FP16.min_cosine is not None and FP16.min_sqnr is not None
    assert INT4.min_cosine is not None and INT4.min_sqnr is not None


@pytest.mark.parametrize("pipeline", ["fp16", "int4"])
@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_lossy_pipelines_pass_verify_with_their_budget(pipeline, builder):
    model, _ = BUILDERS[builder]()
    result = onnxforge.compile(model, pipeline, verify=True)
    assert result.report.verified is True
    how = result.report.verification
    assert how.startswith("lossy") and "cosine >=" in how and "SQNR >=" in how and "random feeds" in how
    assert "verification: within the lossy budget" in result.report.summary()
    assert result.report.to_dict()["verification"] == how


def test_lossless_pipeline_still_uses_allclose():
    model, _ = small_cnn()
    result = onnxforge.compile(model, "optimize", verify=True)
    assert result.report.verification.startswith("lossless") and "rtol 0.0001" in result.report.verification
    assert "verification: outputs match" in result.report.summary()


def test_a_broken_fp16_result_fails_verify(monkeypatch):
    """A conversion bug (every float16 weight rounded to a step of 1/4) is caught by the
    budget that lets the real conversion through."""
    import onnxforge.passes.compression.fp16 as fp16

    real = fp16.to_float16
    monkeypatch.setattr(fp16, "to_float16", lambda arr, **kw: real(np.round(np.asarray(arr) * 4) / 4, **kw))
    model, _ = transformer_block()
    with pytest.raises(VerificationError, match="lossy budget") as err:
        onnxforge.compile(model, "fp16", verify=True)
    assert "SQNR" in str(err.value) or "cosine" in str(err.value)


def test_a_custom_pass_list_with_a_lossy_pass_is_verified_as_lossy():
    model, _ = small_cnn()
    result = onnxforge.compile(model, passes=["fp16"], verify=True)
    assert result.report.verified and result.report.verification.startswith("lossy")
    assert ">= 0.999" in result.report.verification  # fp16's declared cosine


def _affine(scale: float, shift: float, op: str = "Mul") -> onnx.ModelProto:
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    if op == "Log":  # log(x * 0): -inf everywhere
        nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Log", ["m"], ["y"])]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("b", TensorProto.FLOAT, [], [shift])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_lossy_check_measures_cosine_and_sqnr_and_fails_non_finite_outputs():
    ref = _affine(1.0, 0.0)
    figures = check_lossy(ref, _affine(1.001, 0.0), min_cosine=0.999, min_sqnr=30.0)
    assert figures.cosine["y"] == pytest.approx(1.0) and figures.sqnr["y"] == pytest.approx(60.0, abs=0.01)
    # twice the output: cosine 1, but SQNR 0 dB (a wrong scale only SQNR sees)
    with pytest.raises(VerificationError, match="SQNR 0.0 dB < 3 dB"):
        check_lossy(ref, _affine(2.0, 0.0), min_cosine=0.95, min_sqnr=3.0)
    with pytest.raises(VerificationError, match="NaN/Inf"):
        check_lossy(ref, _affine(0.0, 0.0, op="Log"), min_cosine=0.0, min_sqnr=None)


def test_random_feeds_treat_a_negative_declared_dim_as_unknown():
    """PP-OCR's exports declare the batch as dim_value -1: --verify could not make a feed."""
    from onnxforge.equivalence import random_feeds

    m = _affine(1.0, 0.0)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    assert random_feeds(m, seed=0)["x"].shape == (1, 8)
    assert random_feeds(m, seed=0, default_dim=3)["x"].shape == (3, 8)
