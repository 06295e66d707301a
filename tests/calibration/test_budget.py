"""The int8 accuracy budget: non-finite outputs fail it, the figures describe the model actually
returned, a budget that cannot be met fails the compile (or, when allowed, says by how much it
misses), and the budget is measured on samples that were not calibrated on."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxforge
from onnxforge.api import QuantizationOptions
from onnxforge.calibration.data import from_feeds
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import UsageError, VerificationError
from onnxforge.ir import from_proto, to_proto
from onnxforge.metrics.sqnr import cosine
from onnxforge.models.digits import train_digits_cnn


@pytest.fixture(scope="module")
def digits():
    proto, (x, y) = train_digits_cnn(0)
    return proto, x, y


def conv_reciprocal() -> onnx.ModelProto:
    """x -> Conv (positive weights, bias 0.01) -> Reciprocal -> y. Where x is 0 the convolution
    gives exactly the bias, 0.01, which uint8 rounds to 0 on a [0, ~7] range: int8 makes y
    infinite there, float never does."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.uniform(0.0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.full(8, 0.01, np.float32), "b")
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Reciprocal", ["c"], ["y"], name="recip"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w, b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def reciprocal_feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        x = rng.uniform(0, 1, (1, 8, 16, 16)).astype(np.float32)
        x[..., :4, :4] = 0.0
        feeds.append({"x": x})
    return feeds


def test_inf_outputs_count_as_a_budget_failure():
    """The int8 model's output is infinite where float's is 100: cosine and SQNR are undefined
    (not a pass, not a crash), so the guard keeps the convolution in float."""
    result = onnxforge.compile(
        conv_reciprocal(),
        "int8",
        quantization=QuantizationOptions(calibration=reciprocal_feeds(10), speed_guard=False),
    )
    rep = result.report.quantization
    assert rep.kept_float == ["conv"] and rep.quantized == []
    assert rep.output_cosine["y"] == pytest.approx(1.0) and rep.output_sqnr["y"] == math.inf
    y = OrtRunner().run(result.model, reciprocal_feeds(1, seed=5)[0])["y"]
    assert np.isfinite(y).all()


def test_accuracy_counts_non_finite_rows_as_wrong():
    """np.argmax of a NaN row is 0: without care a NaN logit row scores as class 0."""
    from onnxforge.passes.compression.int8.flow import classification_accuracy

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    logits = np.array([[np.nan, 0, 1], [5, 1, 0], [np.inf, 0, 0], [0, 2, 1]], np.float32)
    labels = np.array([0, 0, 0, 1])
    assert classification_accuracy({"x": logits}, labels)(m) == pytest.approx(0.5)


def _chain(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.15).astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(n)]


def _q_count(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_figures_are_remeasured_after_the_speed_guard_rebuilds(monkeypatch):
    """int8 is 'slower' (timing replaced) until half the layers are float again: the accuracy
    score, cosine and SQNR in the report are those of the model returned, not of the first
    int8 build."""
    import onnxforge.passes.compression.int8.flow as static

    proto = _chain(6)
    full = None

    def latencies(f, q, feed):
        nonlocal full
        full = full or _q_count(q)
        return 1.0, (1.2 if _q_count(q) >= full else 0.5)

    monkeypatch.setattr(static, "_latencies", latencies)

    def score(model: onnx.ModelProto) -> float:  # a stand-in accuracy that sees every Q
        return 1.0 - 0.01 * _q_count(model)

    model, rep = static.quantize_static(from_proto(proto), from_feeds(_feeds(10)), evaluate=score, min_macs=0)
    returned = to_proto(model)
    assert rep.kept_for_speed and _q_count(returned) < full
    assert rep.accuracy == (1.0, score(returned))
    assert rep.speedup == pytest.approx(2.0)
    held = [f for i, f in enumerate(_feeds(10)) if i % 5 == 1]  # the held-out samples
    runner = OrtRunner()
    out = proto.graph.output[0].name
    worst = min(cosine(runner.run(proto, f)[out], runner.run(returned, f)[out]) for f in held)
    assert rep.output_cosine[out] == pytest.approx(worst, abs=1e-6)


def test_a_budget_that_cannot_be_met_fails_the_compile(digits):
    proto, x, _ = digits
    calib = [{"input": x[i : i + 1]} for i in range(20)]
    opts = dict(calibration=calib, min_sqnr=200.0, max_fallback=1, speed_guard=False)
    with pytest.raises(VerificationError) as err:
        onnxforge.compile(proto, "int8", quantization=QuantizationOptions(**opts))
    msg = str(err.value)
    assert "\n" not in msg and "200" in msg and "short by" in msg and "held-out" in msg
    assert err.value.report is not None and len(err.value.report.kept_float) == 1
    # allowed: the model is written and the report says by how much it misses
    result = onnxforge.compile(proto, "int8", quantization=QuantizationOptions(**opts, allow_budget_miss=True))
    rep = result.report.quantization
    assert rep.budget_missed and all("short by" in m for m in rep.budget_missed)
    assert any("misses its accuracy budget" in n for n in rep.notes)
    assert rep.to_dict()["budget"]["missed"] == rep.budget_missed


def test_verify_int8_uses_the_users_min_cosine(digits, monkeypatch):
    """--verify checks the user's --min-cosine (here 0.9 and 0.97 against a measured 0.95),
    not a fixed 0.99."""
    import onnxforge.passes.compression.int8.flow as static

    real = static.measure

    def measure(*args, **kwargs):
        errors, sqnr, cos = real(*args, **kwargs)
        return errors, sqnr, {k: 0.95 for k in cos}

    monkeypatch.setattr(static, "measure", measure)
    proto, x, _ = digits
    calib = [{"input": x[i : i + 1]} for i in range(10)]
    result = onnxforge.compile(
        proto,
        "int8",
        quantization=QuantizationOptions(calibration=calib, min_cosine=0.9, speed_guard=False),
        verify=True,
    )
    assert result.report.verified is True and "0.9" in result.report.verification
    with pytest.raises(VerificationError, match="0.97"):
        onnxforge.compile(
            proto,
            "int8",
            quantization=QuantizationOptions(
                calibration=calib, min_cosine=0.97, speed_guard=False, allow_budget_miss=True
            ),
            verify=True,
        )


def _recording(monkeypatch):
    """Record the feeds that calibration and the budget's measurement see."""
    import onnxforge.passes.compression.int8.flow as static

    seen: dict[str, list[bytes]] = {"calibrated": [], "measured": []}
    collect, measure = static.collect_ranges, static.measure

    def rec_collect(model, names, feeds, *a, **k):
        def tee():
            for f in feeds:
                seen["calibrated"].append(f["x"].tobytes())
                yield f

        return collect(model, names, tee(), *a, **k)

    def rec_measure(f, q, plan, samples, *a, **k):
        seen["measured"] += [s["x"].tobytes() for s in samples]
        return measure(f, q, plan, samples, *a, **k)

    monkeypatch.setattr(static, "collect_ranges", rec_collect)
    monkeypatch.setattr(static, "measure", rec_measure)
    return seen


def test_budget_is_measured_on_held_out_calibration_samples(monkeypatch):
    seen = _recording(monkeypatch)
    feeds = _feeds(10)
    result = onnxforge.compile(
        _chain(3), "int8", quantization=QuantizationOptions(calibration=feeds, min_macs=0, speed_guard=False)
    )
    rep = result.report.quantization
    held = {feeds[i]["x"].tobytes() for i in (1, 6)}  # every fifth, from the second
    assert set(seen["measured"]) == held
    assert len(seen["calibrated"]) == 8 and not held & set(seen["calibrated"])
    assert rep.calibration_samples == 8
    assert "2 held-out" in rep.budget_data
    assert any("2 held-out" in line for line in rep.summary_lines())
    assert rep.to_dict()["budget"]["data"] == rep.budget_data


def test_eval_inputs_measure_the_budget_and_calibration_keeps_every_sample(monkeypatch):
    seen = _recording(monkeypatch)
    feeds, evals = _feeds(10), _feeds(3, seed=7)
    result = onnxforge.compile(
        _chain(3),
        "int8",
        quantization=QuantizationOptions(calibration=feeds, eval_inputs=evals, min_macs=0, speed_guard=False),
    )
    rep = result.report.quantization
    assert set(seen["measured"]) == {f["x"].tobytes() for f in evals}
    assert len(seen["calibrated"]) == 10 and rep.calibration_samples == 10
    assert "3 --eval" in rep.budget_data


def test_eval_inputs_that_were_calibrated_on_are_left_out(monkeypatch):
    seen = _recording(monkeypatch)
    feeds = _feeds(10)
    evals = [feeds[2], *_feeds(2, seed=7)]
    result = onnxforge.compile(
        _chain(3),
        "int8",
        quantization=QuantizationOptions(calibration=feeds, eval_inputs=evals, min_macs=0, speed_guard=False),
    )
    assert feeds[2]["x"].tobytes() not in seen["measured"] and len(set(seen["measured"])) == 2
    assert "1 of the 3" in result.report.quantization.budget_data
    with pytest.raises(UsageError, match="every --eval sample is also a calibration sample"):
        onnxforge.compile(
            _chain(3),
            "int8",
            quantization=QuantizationOptions(calibration=feeds, eval_inputs=feeds[:3], min_macs=0),
        )


def test_accuracy_leaves_out_eval_data_samples_that_were_calibrated_on(digits, tmp_path):
    proto, x, y = digits
    np.savez(tmp_path / "eval.npz", input=x[:100], labels=y[:100])
    result = onnxforge.compile(
        proto,
        "int8",
        quantization=QuantizationOptions(
            calibration=[{"input": x[i : i + 1]} for i in range(40)],
            eval_data=str(tmp_path / "eval.npz"),
            max_accuracy_drop=5.0,
            speed_guard=False,
        ),
    )
    rep = result.report.quantization
    # samples 1, 6, ..., 36 were held out of calibration: only the other 32 are left out
    assert "68 of the 100" in rep.accuracy_data and "32 are calibration samples" in rep.accuracy_data
    keep = np.array([not (i < 40 and i % 5 != 1) for i in range(100)])
    runner = OrtRunner()
    want = float((runner.run(proto, {"input": x[:100][keep]})["logits"].argmax(1) == y[:100][keep]).mean())
    assert rep.accuracy[0] == pytest.approx(want)
