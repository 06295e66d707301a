"""Unstructured and N:M pruning (``prune``): exact sparsity per layer, the N:M layout along input
channels, activation-aware scores and least-squares repair beating plain magnitudes, the budget
loop pruning the sensitive layer less, graph inputs/outputs and shapes untouched, the pipeline and
the command line, and time linear in the graph's length."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import make_model, vi

import onnxforge
from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import BudgetError, UsageError
from onnxforge.ir import from_proto, to_proto, verify
from onnxforge.metrics.sqnr import cosine
from onnxforge.passes import PASSES_BY_NAME
from onnxforge.passes.compression.pruning import REPORT_KEY, PruneMagnitude, PruneOptions
from onnxforge.passes.compression.pruning.scores import nm_holds
from onnxforge.passmanager import PassContext
from onnxforge.pipelines import verification_for

F = TensorProto.FLOAT


def _w(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def mlp(seed: int = 0, width: int = 64, scales: bool = True) -> onnx.ModelProto:
    """x[N, 32] -> MatMul(32x64) + b -> Relu -> MatMul(64x64) + b -> Relu -> MatMul(64x16) -> y.
    Input features have very different scales (``scales``), as real activations do."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3"),
    ]
    inits = [
        _w("w1", rng.standard_normal((32, width)) / 6),
        _w("b1", rng.standard_normal(width) * 0.1),
        _w("w2", rng.standard_normal((width, width)) / 8),
        _w("b2", rng.standard_normal(width) * 0.1),
        _w("w3", rng.standard_normal((width, 16)) / 8),
    ]
    return make_model(nodes, [vi("x", shape=["n", 32])], [vi("y", shape=["n", 16])], inits)


def mlp_feeds(n: int, seed: int = 1, batch: int = 16) -> list[dict[str, np.ndarray]]:
    scale = np.exp(np.random.default_rng(0).uniform(-2, 2, 32)).astype(np.float32)  # 0.14 to 7.4, fixed
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((batch, 32)) * scale).astype(np.float32)} for _ in range(n)]


def conv_net(seed: int = 0, cin: int = 8, cout: int = 16) -> onnx.ModelProto:
    """x[1, cin, 8, 8] -> Conv 3x3 (cin -> cout) -> Relu -> Conv 1x1 (cout -> 16) -> y."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    inits = [
        _w("w1", rng.standard_normal((cout, cin, 3, 3))),
        _w("b1", rng.standard_normal(cout)),
        _w("w2", rng.standard_normal((16, cout, 1, 1))),
    ]
    return make_model(nodes, [vi("x", shape=[1, cin, 8, 8])], [vi("y", shape=[1, 16, 8, 8])], inits)


def _weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = OrtRunner().session(model)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _prune(proto: onnx.ModelProto, **kw: object) -> tuple[onnx.ModelProto, object, object]:
    model = modelio.load(proto).model
    ctx = PassContext()
    result = ctx.run(PruneMagnitude(measure_latency=False, **kw), model)  # type: ignore[arg-type]
    out = result.output(model)
    verify(out)
    return to_proto(out), ctx.records[REPORT_KEY], result


def _interface(m: onnx.ModelProto) -> list[tuple[str, bytes]]:
    return [(v.name, v.type.SerializeToString()) for v in [*m.graph.input, *m.graph.output]]


def test_magnitude_zeroes_exactly_the_asked_fraction_and_keeps_every_shape():
    proto = mlp()
    out, report, result = _prune(proto, sparsity=0.5, skip_first=False, min_params=0)
    assert result.modified and result.model is not None
    before, after = _weights(proto), _weights(out)
    for name in ("w1", "w2", "w3"):
        assert after[name].shape == before[name].shape
        assert np.count_nonzero(after[name] == 0) == before[name].size // 2
        kept = after[name] != 0  # the largest magnitudes survive, unchanged
        assert np.abs(before[name][kept]).min() >= np.abs(before[name][~kept]).max()
        np.testing.assert_array_equal(after[name][kept], before[name][kept])
    np.testing.assert_array_equal(after["b1"], before["b1"])  # no data: nothing refitted
    assert _interface(out) == _interface(proto)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in proto.graph.node]
    assert [la.sparsity for la in report.layers] == [0.5, 0.5, 0.5]
    assert report.score == "magnitude" and not report.reconstruction
    assert result.stats["pruned_layers"] == 3
    assert report.flops_before == report.flops_after  # dense FLOPs: zeros still multiply
    assert report.effective_flops_after < report.flops_before


def test_the_input_model_is_left_alone_and_zero_sparsity_changes_nothing():
    model = modelio.load(mlp()).model
    before = to_proto(model).SerializeToString()
    result = PruneMagnitude(sparsity=0.0, measure_latency=False)(model)
    assert not result.modified and result.model is None
    result = PruneMagnitude(sparsity=0.5, min_params=0, measure_latency=False)(model)
    assert result.modified and to_proto(model).SerializeToString() == before


def test_skips_say_why():
    out, report, _ = _prune(mlp(), sparsity=0.5, skip_last=True, min_params=4096, exclude=("fc2",))
    reasons = {la.name: la.reason for la in report.layers}
    assert reasons["fc1"].startswith("small layer") or reasons["fc1"].startswith("first")
    assert reasons["fc2"] == "excluded by name"
    assert "last" in reasons["fc3"] or "small" in reasons["fc3"]
    assert all(la.sparsity == 0 for la in report.layers)
    _, report, _ = _prune(mlp(), sparsity=0.5, min_params=0)
    assert "first prunable layer" in next(la.reason for la in report.layers if la.name == "fc1")


def test_overrides_and_a_global_threshold():
    _, report, _ = _prune(mlp(), sparsity=0.6, min_params=0, skip_first=False, overrides=("fc3=0.25",))
    by = {la.name: la for la in report.layers}
    assert by["fc3"].sparsity == 0.25 and "override" in by["fc3"].reason
    assert by["fc1"].sparsity == pytest.approx(0.6, abs=1e-3)
    _, report, _ = _prune(mlp(), sparsity=0.6, min_params=0, skip_first=False, threshold="global")
    assert report.pruned_sparsity == pytest.approx(0.6, abs=0.01)
    assert len({round(la.sparsity, 3) for la in report.layers}) > 1  # layers differ


@pytest.mark.parametrize("calibrated", [False, True])
def test_n_m_keeps_two_of_every_four_input_channels(calibrated: bool):
    proto = conv_net(cin=8, cout=16)
    kw: dict[str, object] = {"calibration": [{"x": np.random.default_rng(i).standard_normal((1, 8, 8, 8)).astype(np.float32)} for i in range(12)]} if calibrated else {}
    out, report, _ = _prune(proto, n_m=(2, 4), skip_first=False, min_params=0, **kw)
    w1, w2 = _weights(out)["w1"], _weights(out)["w2"]
    # along input channels (axis 1), at every output channel and kernel position
    g1 = (w1.reshape(16, 2, 4, 3, 3) != 0).sum(axis=2)
    g2 = (w2.reshape(16, 4, 4, 1, 1) != 0).sum(axis=2)
    assert g1.max() <= 2 and g2.max() <= 2
    assert np.count_nonzero(w1) == w1.size // 2 or calibrated  # refit may keep a weight at 0
    assert all(la.nm_layout for la in report.layers)
    # TensorRT's sparse kernels want input channels in multiples of 16 and outputs of 8
    assert [la.tensorrt_sparse for la in report.layers] == [False, True]
    assert nm_holds(w1.reshape(1, 16, 72), 2, 4, 9)
    assert report.method == "2:4 sparsity"


def test_n_m_leaves_layers_whose_channels_do_not_split_into_groups():
    out, report, _ = _prune(conv_net(cin=6), n_m=(2, 4), skip_first=False, min_params=0)
    by = {la.name: la for la in report.layers}
    assert by["conv1"].sparsity == 0 and "not a multiple of 4" in by["conv1"].reason
    assert by["conv2"].nm_layout


def test_activation_scores_and_reconstruction_beat_magnitude():
    proto = mlp()
    calib, held = mlp_feeds(24, seed=1), mlp_feeds(4, seed=7)
    ref = _run(proto, held)
    figures = {}
    for label, kw in {
        "magnitude": {},
        "activation": {"calibration": calib, "score": "activation", "reconstruct": False},
        "activation+ls": {"calibration": calib, "score": "activation"},
        "second-order": {"calibration": calib, "score": "second-order"},
    }.items():
        out, report, _ = _prune(proto, sparsity=0.7, min_params=0, skip_first=False, **kw)
        figures[label] = cosine(ref, _run(out, held))
        assert report.pruned_sparsity == pytest.approx(0.7, abs=0.02)
    assert figures["activation"] > figures["magnitude"]
    assert figures["activation+ls"] > figures["activation"] + 0.01
    assert figures["second-order"] > figures["activation"]
    assert figures["activation+ls"] > 0.93, figures


def test_the_budget_prunes_the_sensitive_layer_less():
    """fc2's weights are nearly sparse already (15% large, the rest tiny): pruning 80% of them
    costs the outputs little; fc3's are dense Gaussian: pruning 80% of them costs a lot. The budget
    backs fc3 off first and leaves fc2 pruned as asked."""
    proto = mlp()
    rng = np.random.default_rng(3)
    big = rng.random((64, 64)) < 0.15
    w2 = np.where(big, rng.standard_normal((64, 64)) / 3, 0.003 * rng.standard_normal((64, 64)))
    next(t for t in proto.graph.initializer if t.name == "w2").CopyFrom(_w("w2", w2))
    calib = mlp_feeds(30, seed=1)
    out, report, _ = _prune(
        proto, sparsity=0.8, calibration=calib, score="magnitude", reconstruct=False, min_params=0,
        skip_first=True, min_cosine=0.99,
    )
    by = {la.name: la for la in report.layers}
    assert report.stepped and report.stepped[0] == "fc3"
    assert by["fc3"].sparsity < by["fc2"].sparsity
    assert by["fc3"].reason.startswith("budget")
    assert by["fc2"].sparsity == pytest.approx(0.8, abs=1e-3)
    assert not report.budget_missed and min(report.output_cosine.values()) >= 0.99
    assert report.sensitivity[0][0] == "fc3"  # the ranking said so
    assert "held-out" in report.budget_data


def test_allocate_moves_sparsity_to_the_layer_the_outputs_feel_least():
    """The same fc2 (nearly sparse already) and fc3 (dense) as above: with ``allocate`` fc2
    takes more than the asked half, fc3 less, as many weights are zero in all, and the outputs
    are closer to the original's than with every layer at 50%."""
    proto = mlp()
    rng = np.random.default_rng(3)
    big = rng.random((64, 64)) < 0.15
    w2 = np.where(big, rng.standard_normal((64, 64)) / 3, 0.003 * rng.standard_normal((64, 64)))
    next(t for t in proto.graph.initializer if t.name == "w2").CopyFrom(_w("w2", w2))
    calib, feeds = mlp_feeds(30, seed=1), mlp_feeds(4, seed=9)
    ref = _run(proto, feeds)
    kw = {"sparsity": 0.5, "calibration": calib, "score": "magnitude", "reconstruct": False, "min_params": 0}
    uniform, _, _ = _prune(proto, **kw)
    out, report, _ = _prune(proto, allocate=True, **kw)
    by = {la.name: la for la in report.layers}
    assert by["fc2"].sparsity > 0.5 > by["fc3"].sparsity
    assert by["fc3"].reason.startswith("allocate")
    zeros = sum(la.sparsity * la.params for la in report.layers if la.name != "fc1")
    assert zeros >= 0.5 * (64 * 64 + 64 * 16) - 1
    assert any(n.startswith("allocate: 2 layers") for n in report.notes)
    err = [float(np.square(_run(m, feeds) - ref).mean()) for m in (uniform, out)]
    assert err[1] < err[0] / 2, err
    _, nm_report, _ = _prune(proto, n_m=(2, 4), allocate=True, calibration=calib, min_params=0)
    assert any("N:M fixes" in n for n in nm_report.notes)


def test_a_budget_that_cannot_hold_fails_unless_allowed():
    calib = mlp_feeds(12)
    with pytest.raises(BudgetError, match="misses its accuracy budget"):
        _prune(mlp(), sparsity=0.9, calibration=calib, min_params=0, min_cosine=0.99999999, max_steps=1)
    _, report, _ = _prune(
        mlp(), sparsity=0.9, calibration=calib, min_params=0, min_cosine=0.99999999, max_steps=1, allow_budget_miss=True
    )
    assert report.budget_missed and "allowed" in report.notes[-1]


def test_activation_scores_need_data():
    with pytest.raises(UsageError, match="calibration"):
        _prune(mlp(), sparsity=0.5, score="activation")


def test_options_parse_and_validate():
    assert PruneOptions.parse_value("n_m", "2:4") == (2, 4)
    assert PruneOptions.parse_value("n_m", "none") is None
    with pytest.raises(ValueError):
        PruneOptions.parse_value("n_m", "4:2")
    with pytest.raises(UsageError):
        PruneMagnitude(sparsity=1.0)
    with pytest.raises(UsageError):
        PruneMagnitude(overrides=("fc1",))
    assert PASSES_BY_NAME["prune"] is PruneMagnitude
    assert not PruneMagnitude.lossless
    assert not verification_for("prune").lossless


def test_layers_inside_subgraphs_and_shared_weights_are_left_alone():
    rng = np.random.default_rng(0)
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"], name="inner")], "then", [], [vi("t", shape=[2, 32])]
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", shape=[2, 32])])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="shared1"),
        helper.make_node("MatMul", ["a", "w"], ["b"], name="shared2"),
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
        helper.make_node("Add", ["b", "y"], ["z"]),
    ]
    proto = make_model(
        nodes, [vi("x", shape=[2, 32]), vi("c", TensorProto.BOOL, [])], [vi("z", shape=[2, 32])],
        [_w("w", rng.standard_normal((32, 32)))],
    )
    out, report, result = _prune(proto, sparsity=0.5, min_params=0, skip_first=False)
    assert not result.modified
    assert {la.name: la.reason for la in report.layers} == {
        "shared1": "its weight is shared with other nodes",
        "shared2": "its weight is shared with other nodes",
    }


def test_the_prune_pipeline_and_its_verification():
    result = onnxforge.compile(
        mlp(), "prune", options={"prune": {"sparsity": 0.5, "min_params": 0, "measure_latency": False}}, verify=True
    )
    assert result.report.pruning is not None and result.report.verified
    assert "finite" in result.report.verification
    assert "pruning: unstructured 50%" in result.report.summary()
    assert result.report.to_dict()["pruning"]["sparsity"] > 0.3


def test_command_line(tmp_path):
    src, dst = tmp_path / "mlp.onnx", tmp_path / "out.onnx"
    onnx.save(mlp(), src)
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in mlp_feeds(10)]))
    rc = main(
        [
            "compile", str(src), "-o", str(dst), "--pipeline", "prune", "--sparsity", "0.5", "--calibration",
            str(tmp_path / "calib.npz"), "--min-cosine", "0.9", "--option", "prune.min_params=0", "--quiet",
            "--report", str(tmp_path / "r.json"),
        ]
    )
    assert rc == 0
    w = _weights(onnx.load(dst))
    assert np.count_nonzero(w["w2"] == 0) >= w["w2"].size // 2
    rc = main(["compile", str(src), "-o", str(tmp_path / "nm.onnx"), "--pipeline", "prune", "--n-m", "2:4", "--quiet",
               "--option", "prune.min_params=0", "--option", "prune.skip_first=false"])
    assert rc == 0
    w = _weights(onnx.load(tmp_path / "nm.onnx"))
    assert (w["w1"].reshape(8, 4, 64) != 0).sum(axis=1).max() <= 2
    assert main(["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--pipeline", "prune", "--quiet"]) == 2
    assert main(["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--structured", "--quiet"]) == 2
    assert main(["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--allocate-sparsity", "--quiet"]) == 2
    args = ["compile", str(src), "-o", str(tmp_path / "x.onnx"), "--pipeline", "prune", "--n-m", "2:4", "--allocate-sparsity"]
    assert main([*args, "--quiet"]) == 2
    rc = main(
        [
            "compile", str(src), "-o", str(tmp_path / "alloc.onnx"), "--pipeline", "prune", "--sparsity", "0.5",
            "--allocate-sparsity", "--calibration", str(tmp_path / "calib.npz"), "--min-cosine", "0", "--quiet",
            "--option", "prune.min_params=0", "--report", str(tmp_path / "a.json"),
        ]
    )  # fmt: skip
    assert rc == 0
    pruning = json.loads((tmp_path / "a.json").read_text())["pruning"]
    assert any(n.startswith("allocate: 2 layers") for n in pruning["notes"])  # it ran (this MLP stays uniform)


def _chain(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, t = [], [], "x"
    for i in range(n):
        inits.append(_w(f"w{i}", rng.standard_normal((16, 16))))
        nodes += [helper.make_node("MatMul", [t, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        t = f"r{i}"
    nodes.append(helper.make_node("Identity", [t], ["y"]))
    return make_model(nodes, [vi("x", shape=[4, 16])], [vi("y", shape=[4, 16])], inits)


def test_linear_time_on_a_long_chain():
    timings = {}
    for n in (250, 1000):
        model = modelio.load(_chain(n)).model
        start = time.perf_counter()
        result = PruneMagnitude(sparsity=0.5, min_params=0, measure_latency=False)(model)
        timings[n] = time.perf_counter() - start
        assert result.stats["pruned_layers"] == n - 1  # all but the first
    # 4x the layers: well under 16x the time (quadratic), with room for a noisy machine
    assert timings[1000] < 8 * timings[250] + 1.0, timings


def test_sequential_reconstruction_reads_the_pruned_model():
    """Sequential pruning refits each layer to the original layer's outputs from the inputs the
    pruned layers before it produce: better than refitting every layer on the original inputs."""
    proto = mlp()
    calib, held = mlp_feeds(24, seed=1), mlp_feeds(4, seed=7)
    ref = _run(proto, held)
    seq, _, _ = _prune(proto, sparsity=0.8, min_params=0, skip_first=False, calibration=calib)
    flat, _, _ = _prune(proto, sparsity=0.8, min_params=0, skip_first=False, calibration=calib, sequential=False)
    assert cosine(ref, _run(seq, held)) > cosine(ref, _run(flat, held))


def test_conv_reconstruction_fits_the_bias_too():
    proto = conv_net()
    calib = [{"x": np.abs(np.random.default_rng(i).standard_normal((1, 8, 8, 8))).astype(np.float32)} for i in range(16)]
    out, report, _ = _prune(proto, sparsity=0.6, min_params=0, skip_first=False, calibration=calib)
    before, after = _weights(proto), _weights(out)
    assert not np.allclose(before["b1"], after["b1"])  # refitted
    assert len(out.graph.node[2].input) == 3  # conv2 got a bias to absorb the removed mean
    assert from_proto(out).graph.inputs[0].shape() == (1, 8, 8, 8)
    assert report.reconstruction


def test_auto_damping_grows_as_calibration_rows_get_scarce():
    from onnxforge.passes.compression.pruning.magnitude import DAMP_MIN, DAMP_RANGE, auto_damp

    assert auto_damp(108, 50_000) == pytest.approx(DAMP_MIN, abs=1e-3)  # plenty of rows: SparseGPT's 1%
    assert auto_damp(384, 1200) < auto_damp(384, 400) < auto_damp(1536, 400) == DAMP_MIN + DAMP_RANGE
    assert auto_damp(10, 0) == DAMP_MIN + DAMP_RANGE
    PruneOptions(damp=None).validate()
    with pytest.raises(ValueError, match="damp"):
        PruneOptions(damp=0.0).validate()
    # the default follows the data: with 8 rows for 64 features it differs from a fixed 1%
    model = mlp()
    feeds = [{"x": np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)}]
    got = {}
    for damp in (None, 0.01):
        out, _, _ = _prune(model, sparsity=0.5, calibration=feeds, score="second-order", damp=damp, skip_first=False, min_params=0)
        got[damp] = [numpy_helper.to_array(t) for t in out.graph.initializer]
    assert any(not np.allclose(a, b) for a, b in zip(got[None], got[0.01]))


def test_the_report_says_when_calibration_rows_are_fewer_than_a_layers_inputs():
    model = mlp()  # fc1 reads 32 features, fc2 and fc3 64
    few = [{"x": np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)}]  # 40 rows: 32 <= 40 < 64
    _, report, _ = _prune(model, sparsity=0.5, calibration=few, skip_first=False, min_params=0)
    [note] = [n for n in report.notes if n.startswith("calibration:")]
    assert note.startswith("calibration: 2 layer(s) saw fewer calibration rows than they have inputs (as few as 40 rows, up to 64 inputs)")
    _, report, _ = _prune(model, sparsity=0.5, calibration=mlp_feeds(8), skip_first=False, min_params=0)  # 128 rows
    assert not [n for n in report.notes if n.startswith("calibration:")]
