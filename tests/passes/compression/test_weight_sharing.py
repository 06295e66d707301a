"""k-means weight sharing: the codebook numerics, the standard-ONNX form (decoded exactly as the
codebook says, by onnxruntime with and without its optimizations), tied weights, packed 4-bit
indices, constant folding leaving the decode alone, and the bits-per-layer budget."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import const, make_model, vi

from onnxforge import modelio
from onnxforge.calibration.budget import BudgetError
from onnxforge.equivalence import OrtRunner, assert_equivalent
from onnxforge.ir import to_proto
from onnxforge.kernels.registry import evaluate
from onnxforge.passes import ConstantFolding
from onnxforge.passes.compression.codebook import (
    Codebook,
    assign_with_error_feedback,
    compact,
    decoded_weight,
    fit_codebook,
    is_decode_node,
    kmeans_1d,
    packed_uint4,
    refine_centroids,
)
from onnxforge.passes.compression.weight_sharing import REPORT_KEY, ShareWeights
from onnxforge.passmanager import PassContext

RNG = np.random.default_rng(0)


def _mlp(opset: int = 17, tied: bool = False) -> onnx.ModelProto:
    """x [b, 16] -> MatMul W1 [16, 64] -> Relu -> Gemm(W2 [32, 64], transB) -> y; optionally an
    embedding Gather reading W1 too (a tied weight)."""
    w1 = RNG.standard_normal((16, 64)).astype(np.float32)
    w1[:, :8] = 0  # pruned columns: zero must stay exact
    w2 = RNG.standard_normal((32, 64)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=1),
    ]
    inputs = [vi("x", shape=["b", 16])]
    outputs = [vi("y", shape=["b", 32])]
    if tied:
        nodes.append(helper.make_node("Gather", ["w1", "ids"], ["emb"], name="embed", axis=0))
        inputs.append(vi("ids", TensorProto.INT64, [3]))
        outputs.append(vi("emb", shape=[3, 64]))
    return make_model(
        nodes, inputs, outputs, [const("w1", w1), const("w2", w2), const("b2", np.zeros(32))], opset=opset,
        ir_version=10 if opset >= 21 else 8,
    )


def _share(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, object]:
    ctx = PassContext()
    ir = modelio.load(model).model
    result = ctx.run(ShareWeights(**options), ir)
    assert result.modified
    out = to_proto(result.model)
    onnx.checker.check_model(out, full_check=True)
    return out, ctx.records[REPORT_KEY]


def _decoded_reference(model: onnx.ModelProto, compressed: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every shared weight replaced by its decoded codebook values."""
    ir = modelio.load(compressed).model
    values = {v.name: v for v in ir.graph.values()}
    inits = ir.graph.initializers
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    for t in ref.graph.initializer:
        got = decoded_weight(values.get(f"{t.name}_decoded"))
        if got is not None:
            dense = got[0]
        elif f"{t.name}_codebook" in inits:  # read by a Gather only: no dense decode
            dense = inits[f"{t.name}_codebook"].array()[inits[f"{t.name}_codebook_indices"].array().astype(np.int64)]
            if f"{t.name}_codebook_scales" in inits:  # per-column scales of the table
                dense = dense * inits[f"{t.name}_codebook_scales"].array()
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(dense.astype(np.float32), t.name))
    return ref


def test_kmeans_is_linear_initialized_and_converges():
    x = np.concatenate([RNG.normal(-2, 0.1, 500), RNG.normal(3, 0.1, 500)])
    c = kmeans_1d(x, 2)
    assert np.allclose(c, [-2, 3], atol=0.05)
    assert np.array_equal(kmeans_1d(x, 4), kmeans_1d(x, 4))  # deterministic
    assert np.all(np.diff(kmeans_1d(RNG.standard_normal(10_000), 16)) > 0)


def test_codebook_keeps_zero_exact_and_has_at_most_2_to_the_bits_values():
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    w[RNG.random(w.shape) < 0.6] = 0
    for bits in (2, 3, 4, 8):
        cb = fit_codebook(w, bits)
        assert cb.centroids.size == 1 << bits and cb.zero_index == 0 and cb.centroids[0] == 0
        d = cb.decode()
        assert np.array_equal(d == 0, w == 0)  # pruned stay pruned, nothing else becomes 0
        assert np.unique(d).size <= 1 << bits
    dense = fit_codebook(RNG.standard_normal(1000).astype(np.float32), 4, keep_zero=True)
    assert dense.zero_index is None
    err8 = np.square(fit_codebook(w, 8).decode() - w).mean()
    err4 = np.square(fit_codebook(w, 4).decode() - w).mean()
    assert err8 < err4 / 10
    with pytest.raises(ValueError, match="bits"):
        fit_codebook(w, 9)


def test_refinement_lowers_the_layer_output_error():
    x = RNG.standard_normal((256, 32)) * np.linspace(0.1, 3, 32)  # channels of unequal power
    w = RNG.standard_normal((32, 16)).astype(np.float32)
    g = x.T @ x / len(x)
    cb = fit_codebook(w, 3)
    refined = refine_centroids(cb, w, g, axis=0)

    def out_err(c):
        return float(np.square(x @ (w - c.decode())).mean())

    # the least-squares optimum over the centroids, solved directly: [x S_c] columns
    cols = np.stack([(x @ (cb.indices == c)).ravel() for c in range(8)], axis=1)
    best, *_ = np.linalg.lstsq(cols, (x @ w).ravel(), rcond=None)
    optimum = float(np.square(x @ w - (cols @ best).reshape(x.shape[0], -1)).mean())
    assert out_err(refined) < out_err(cb) and out_err(refined) == pytest.approx(optimum, rel=1e-4)
    assert np.array_equal(refined.indices, cb.indices)
    wt = np.ascontiguousarray(w.T)  # the same weight stored [N, K] (Gemm transB): axis 1
    cbt = fit_codebook(wt, 3)
    rt = refine_centroids(cbt, wt, g, axis=1)
    assert float(np.square(x @ (w - rt.decode().T)).mean()) < float(np.square(x @ (w - cbt.decode().T)).mean())


def test_error_feedback_assignment_lowers_the_output_error_and_keeps_zeros():
    # correlated input channels: where rounding errors can cancel through the Gram matrix; its
    # own generator, so that the data does not depend on which tests ran before (the module's
    # RNG after some subsets gave a draw where the feedback changed nothing)
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((32, 32)) * 0.4 + np.eye(32)
    x = rng.standard_normal((512, 32)) @ mix * np.linspace(0.2, 2, 32)
    w = rng.standard_normal((32, 24)).astype(np.float32)
    w[rng.random(w.shape) < 0.3] = 0
    g = x.T @ x / len(x)

    def out_err(c, weight=w, axis=0):
        d = c.decode() if axis == 0 else c.decode().T
        return float(np.square(x @ (weight - d)).mean())

    for scale_axis in (None, 1):
        cb = fit_codebook(w, 3, scale_axis=scale_axis)
        fed = assign_with_error_feedback(cb, w, g, axis=0)
        assert out_err(fed) < 0.98 * out_err(cb)
        assert np.array_equal(fed.centroids, cb.centroids)
        assert np.array_equal(fed.decode() == 0, w == 0)  # pruned stay 0, kept weights never become 0
    wt = np.ascontiguousarray(w.T)  # stored [N, K]: the input channels on axis 1
    cbt = fit_codebook(wt, 3, scale_axis=0)
    fedt = assign_with_error_feedback(cbt, wt, g, axis=1)
    assert out_err(fedt, axis=1) < 0.98 * out_err(cbt, axis=1)
    with pytest.raises(ValueError, match="input channels"):
        assign_with_error_feedback(cb, w, g[:8, :8], axis=0)


def test_shared_model_decodes_exactly_what_the_codebook_says():
    model = _mlp()
    out, report = _share(model, bits=4)
    types = {t.name: t.data_type for t in out.graph.initializer}
    assert types == {"w1_codebook_indices": TensorProto.UINT8, "w1_codebook": TensorProto.FLOAT,
                     "w1_codebook_scales": TensorProto.FLOAT, "w2_codebook_indices": TensorProto.UINT8,
                     "w2_codebook": TensorProto.FLOAT, "w2_codebook_scales": TensorProto.FLOAT,
                     "b2": TensorProto.FLOAT}  # fmt: skip
    scales = {t.name: list(t.dims) for t in out.graph.initializer if t.name.endswith("_scales")}
    assert scales == {"w1_codebook_scales": [1, 64], "w2_codebook_scales": [32, 1]}  # per output channel
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Gather") == 2 and ops.count("Mul") == 2
    plain, _ = _share(model, bits=4, channel_scales=False)  # the paper's form: one codebook, no scales
    assert not any(t.name.endswith("_scales") for t in plain.graph.initializer)
    assert [layer.bits for layer in report.layers] == [4, 4]
    assert report.layers[0].zeros == 16 * 8
    ref = _decoded_reference(model, out)
    feeds = {"x": RNG.standard_normal((5, 16)).astype(np.float32)}
    assert_equivalent(ref, out, feeds=feeds, rtol=0, atol=0)
    # onnxruntime folds the decode when it optimizes: the same outputs (up to its fusions' order)
    fast = OrtRunner(optimize=True).run(out, feeds)["y"]
    np.testing.assert_allclose(fast, OrtRunner(optimize=True).run(ref, feeds)["y"], rtol=1e-6, atol=1e-6)


def test_tied_weight_gets_one_codebook_and_the_embedding_gathers_indices():
    model = _mlp(tied=True)
    out, report = _share(model, bits=4)
    names = [t.name for t in out.graph.initializer]
    assert names.count("w1_codebook_indices") == 1 and "w1" not in names  # still one tensor
    assert report.layers[0].readers == "mm, embed"
    embed = next(n for n in out.graph.node if n.name == "embed")
    producers = {o: n for n in out.graph.node for o in n.output}
    cast = producers[embed.input[1]]
    rows = producers[cast.input[0]]
    assert (embed.input[0], cast.op_type, rows.op_type, rows.input[0]) == ("w1_codebook", "Cast", "Gather", "w1_codebook_indices")
    feeds = {"x": RNG.standard_normal((2, 16)).astype(np.float32), "ids": np.array([0, 15, 3], np.int64)}
    assert_equivalent(_decoded_reference(model, out), out, feeds=feeds, rtol=0, atol=0)


def test_an_embedding_table_gets_column_scales_applied_after_the_lookup():
    rng = np.random.default_rng(7)
    # hidden dimensions of ranges 0.01 to 10, as embedding tables with outlier dimensions have
    table = (rng.standard_normal((40, 24)) * np.logspace(-2, 1, 24)).astype(np.float32)
    model = make_model(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed", axis=0)],
        [vi("ids", TensorProto.INT64, [2, 5])], [vi("emb", shape=[2, 5, 24])], [const("table", table)], opset=21,
        ir_version=10,
    )
    out, report = _share(model, bits=4)
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert inits["table_codebook_scales"].shape == (1, 24)
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.output[0] == "emb" and mul.input[1] == "table_codebook_scales"
    feeds = {"ids": rng.integers(0, 40, (2, 5)).astype(np.int64)}
    assert_equivalent(_decoded_reference(model, out), out, feeds=feeds, rtol=0, atol=0)
    # every dimension keeps its own relative precision (one codebook without scales would
    # round the small dimensions to a single value)
    ref = _decoded_reference(model, out)
    dense = numpy_helper.to_array(next(t for t in ref.graph.initializer if t.name == "table"))
    rel = np.sqrt(np.square(dense - table).mean(0) / np.square(table).mean(0))
    assert rel.max() < 0.2 and report.layers[0].weight_sqnr_db > 15


def test_4bit_indices_are_packed_at_opset_21():
    model = _mlp(opset=21)
    out, report = _share(model, bits=4)
    idx = next(t for t in out.graph.initializer if t.name == "w1_codebook_indices")
    assert idx.data_type == TensorProto.UINT4 and len(idx.raw_data) == 16 * 64 // 2
    assert report.layers[0].bytes_after == 16 * 64 // 2 + 16 * 4 + 64 * 4  # indices, codebook, scales
    feeds = {"x": RNG.standard_normal((3, 16)).astype(np.float32)}
    assert_equivalent(_decoded_reference(model, out), out, feeds=feeds, rtol=0, atol=0)
    five, _ = _share(model, bits=5)  # 5 bits do not fit a nibble
    assert next(t for t in five.graph.initializer if t.name == "w1_codebook_indices").data_type == TensorProto.UINT8


def test_the_decode_has_kernels_and_constant_folding_leaves_it():
    t = packed_uint4(np.array([[1, 15], [7, 0]], np.uint8))
    (idx32,) = evaluate("Cast", [numpy_helper.to_array(t)], {"to": TensorProto.INT32}, opset=21)
    assert idx32.dtype == np.int32 and idx32.tolist() == [[1, 15], [7, 0]]
    (w,) = evaluate("Gather", [np.arange(16, dtype=np.float32), idx32], {"axis": 0}, opset=21)
    assert w.tolist() == [[1, 15], [7, 0]]
    out, _ = _share(_mlp(tied=True), bits=3)
    ir = modelio.load(out).model
    assert sum(is_decode_node(n) for n in ir.graph) == 7  # Cast, Gather of w1 and w2 (w2's Mul reads no constant pair), the embedding's Gather, Cast, Gather
    assert ConstantFolding()(ir).modified is False


def test_budget_adds_bits_to_the_sensitive_layers():
    model = _mlp()
    calib = [{"x": RNG.standard_normal((8, 16)).astype(np.float32)} for _ in range(10)]
    _, loose = _share(model, bits=2, calibration=calib)
    out, tight = _share(model, bits=2, calibration=calib, min_cosine=0.999)
    assert tight.stepped and min(tight.output_cosine.values()) >= 0.999
    assert min(loose.output_cosine.values()) < 0.999 and not loose.stepped
    assert {layer.name: layer.bits for layer in tight.layers} != {"w1": 2, "w2": 2}
    assert "held-out" in tight.budget_data
    with pytest.raises(BudgetError, match="misses its budget"):
        _share(model, bits=2, calibration=calib, min_cosine=1.0, max_steps=1)
    _, missed = _share(model, bits=2, calibration=calib, min_cosine=1.0, max_steps=1, allow_budget_miss=True)
    assert missed.budget_missed


def test_mixed_bits_keep_the_mean_and_move_bits_to_the_weight_the_output_feels():
    # y = x @ w_loud + 0.01 * (x @ w_quiet): the same size, 40 dB apart at the output
    rng = np.random.default_rng(11)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w_loud"], ["a"], name="loud"),
            helper.make_node("MatMul", ["x", "w_quiet"], ["b"], name="quiet"),
            helper.make_node("Mul", ["b", "k"], ["c"], name="damp"),
            helper.make_node("Add", ["a", "c"], ["y"], name="add"),
        ],
        [vi("x", shape=["n", 32])], [vi("y", shape=["n", 48])],
        [const("w_loud", rng.standard_normal((32, 48))), const("w_quiet", rng.standard_normal((32, 48))),
         const("k", np.array(0.01))],
    )  # fmt: skip
    feeds = {"x": rng.standard_normal((64, 32)).astype(np.float32)}
    ref = OrtRunner().run(model, feeds)["y"]
    errs, bits = [], []
    for mixed in (False, True):
        out, report = _share(model, bits=3, mixed_bits=mixed)
        bits.append({layer.name: layer.bits for layer in report.layers})
        errs.append(float(np.square(OrtRunner().run(out, feeds)["y"] - ref).mean()))
        assert report.mean_bits == pytest.approx(3.0)  # the same index bits in total
    assert bits[0] == {"w_loud": 3, "w_quiet": 3}
    assert bits[1] == {"w_loud": 4, "w_quiet": 2}  # 2 bits is the least a codebook takes
    assert any("mixed_bits" in note for note in report.notes)
    assert errs[1] < errs[0] / 3, errs  # one more bit: ~6 dB less noise from the loud weight


def test_calibration_makes_clustering_data_aware():
    # The first 4 input channels carry the signal and meet small weights; the other 12 are
    # nearly silent and meet large ones. Clustering by weight error spends the centroids on
    # the large weights; clustering by the input's power does not.
    w = np.concatenate([RNG.normal(0, 0.1, (4, 64)), RNG.normal(0, 5.0, (12, 64))]).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [vi("x", shape=["b", 16])],
        [vi("y", shape=["b", 64])],
        [const("w", w)],
    )
    scale = np.r_[np.full(4, 10.0), np.full(12, 0.01)].astype(np.float32)
    calib = [{"x": RNG.standard_normal((16, 16)).astype(np.float32) * scale} for _ in range(10)]
    feeds = {"x": RNG.standard_normal((64, 16)).astype(np.float32) * scale}
    ref = OrtRunner().run(model, feeds)["y"]
    errs = []
    for calibration in (None, calib):
        out, report = _share(model, bits=3, calibration=calibration)
        assert report.layers[0].refined is (calibration is not None)
        errs.append(float(np.square(OrtRunner().run(out, feeds)["y"] - ref).mean()))
    assert errs[1] < errs[0] / 10, errs


def test_small_weights_and_graph_inputs_stay_float():
    model = _mlp()
    ir = modelio.load(model).model
    ctx = PassContext()
    assert ctx.run(ShareWeights(min_elements=10_000), ir).modified is False
    assert "no weight" in ctx.records[REPORT_KEY].notes[0]


def test_compact_drops_unused_centroids_and_keeps_the_zero_first():
    centroids = np.array([0.0, -1.0, -0.5, 0.25, 0.5, 1.0, 2.0, 3.0], np.float32)
    idx = np.array([[0, 5, 5, 2], [0, 2, 7, 7]], np.uint8)  # 4 of 8 centroids used
    cb = Codebook(centroids, idx, 3, zero_index=0)
    small = compact(cb)
    assert small.centroids.size == 4 and small.zero_index == 0 and small.centroids[0] == 0.0
    np.testing.assert_array_equal(small.decode(), cb.decode())
    third = np.float32(1 / 3)  # not a float16 value: rounded to one
    rounded = compact(Codebook(np.array([third, 1.0], np.float32), np.array([0, 1, 1], np.uint8), 1), np.float16)
    assert rounded.centroids[0] == np.float32(np.float16(third)) and rounded.centroids[1] == 1.0


def test_a_codebook_as_large_as_its_weight_leaves_it_float():
    model = _mlp()  # w1 has 1,024 elements, w2 2,048
    tiny = RNG.standard_normal((16, 8)).astype(np.float32)  # 128 elements: 8 bits would give 256 centroids
    model.graph.initializer.append(numpy_helper.from_array(tiny, "w3"))
    model.graph.node.append(helper.make_node("MatMul", ["x", "w3"], ["z"], name="mm3"))
    model.graph.output.append(vi("z", shape=["b", 8]))
    out, report = _share(model, bits=8)
    bits = {layer.name: layer.bits for layer in report.layers}
    assert bits["w3"] is None and bits["w1"] == 8 and bits["w2"] == 8
    assert "w3" in {t.name for t in out.graph.initializer}
    assert all(layer.centroids <= 2**8 for layer in report.layers)


def test_weights_inside_if_branches_are_shared_too():
    w_then = RNG.standard_normal((16, 32)).astype(np.float32)
    w_else = RNG.standard_normal((16, 32)).astype(np.float32)
    outer = RNG.standard_normal((16, 32)).astype(np.float32)

    def branch(name, w):
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_a"]), helper.make_node("MatMul", ["x", "outer"], [f"{name}_b"]),
             helper.make_node("Add", [f"{name}_a", f"{name}_b"], [f"{name}_y"])],
            name, [], [vi(f"{name}_y", shape=[2, 32])], [const(f"{name}_w", w)],
        )  # fmt: skip

    model = make_model(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("then", w_then), else_branch=branch("else", w_else))],
        [vi("x", shape=[2, 16]), vi("c", TensorProto.BOOL, [])],
        [vi("y", shape=[2, 32])],
        [const("outer", outer)],
    )
    out, report = _share(model, bits=4, min_elements=256)
    assert sorted(layer.name for layer in report.layers) == ["else_w@1", "outer", "then_w@2"]  # @: graph index
    for c in (True, False):
        feeds = {"x": RNG.standard_normal((2, 16)).astype(np.float32), "c": np.array(c)}
        got, want = OrtRunner().run(out, feeds)["y"], OrtRunner().run(model, feeds)["y"]
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.98
