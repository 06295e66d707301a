"""Channel pruning (``prune-channels``): the dependency groups across residual Adds, Concat,
depthwise and grouped convolutions, Flatten -> Gemm, MatMul hidden units and attention heads;
channels whose weights are all zero are removed with every output unchanged; graph inputs and
outputs never change; kept counts round to a multiple; reconstruction repairs the next layer; the
budget keeps the sensitive group whole; time linear in the graph's length.

The exactness tests zero a few channels where they are produced (weights and bias) so that they
carry exact zeros through ``Relu``: the lowest-scoring channels are then exactly those, and
removing them must leave every output as it was (up to float summation order)."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import make_model, vi

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner, assert_equivalent
from onnxforge.ir import to_proto, verify
from onnxforge.metrics.sqnr import cosine
from onnxforge.passes.compression.pruning import REPORT_KEY, PruneChannels
from onnxforge.passes.compression.pruning.channels import keep_count
from onnxforge.passes.compression.pruning.dependency import find_groups
from onnxforge.passmanager import PassContext

F = TensorProto.FLOAT


def _w(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _dead(rng: np.random.Generator, shape: tuple[int, ...], dead: list[int]) -> np.ndarray:
    """Random weights whose output channels (axis 0) ``dead`` are all zero."""
    w = rng.standard_normal(shape).astype(np.float32)
    w[dead] = 0
    return w


def _bias(rng: np.random.Generator, n: int, dead: list[int]) -> np.ndarray:
    b = rng.standard_normal(n).astype(np.float32) * 0.1
    b[dead] = 0
    return b


def _prune(proto: onnx.ModelProto, **kw: object) -> tuple[onnx.ModelProto, object]:
    model = modelio.load(proto).model
    ctx = PassContext()
    result = ctx.run(PruneChannels(measure_latency=False, **kw), model)  # type: ignore[arg-type]
    out = result.output(model)
    verify(out)
    proto_out = to_proto(out)
    onnx.checker.check_model(proto_out)
    return proto_out, ctx.records[REPORT_KEY]


def _interface(m: onnx.ModelProto) -> list[tuple[str, bytes]]:
    return [(v.name, v.type.SerializeToString()) for v in [*m.graph.input, *m.graph.output]]


def _shapes(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in m.graph.initializer}


def _exact(proto: onnx.ModelProto, out: onnx.ModelProto) -> None:
    assert _interface(out) == _interface(proto)
    assert_equivalent(proto, out, rtol=1e-5, atol=1e-5)


# -- models ------------------------------------------------------------------------------------


def chain(dead: list[int]) -> onnx.ModelProto:
    """Conv(3->16) + BN -> Relu -> Conv(16->8): channels ``dead`` of the first carry zeros."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["n1"], name="bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    beta = rng.standard_normal(16).astype(np.float32) * 0.1
    beta[dead] = 0  # BN maps a zero channel to beta - mu*g/sqrt(var): zero when both are
    mu = rng.standard_normal(16).astype(np.float32) * 0.1
    mu[dead] = 0
    inits = [
        _w("w1", _dead(rng, (16, 3, 3, 3), dead)),
        _w("b1", _bias(rng, 16, dead)),
        _w("g", rng.uniform(0.5, 1.5, 16)),
        _w("beta", beta),
        _w("mu", mu),
        _w("var", rng.uniform(0.5, 1.5, 16)),
        _w("w2", rng.standard_normal((8, 16, 1, 1))),
        _w("b2", rng.standard_normal(8)),
    ]
    return make_model(nodes, [vi("x", shape=[1, 3, 8, 8])], [vi("y", shape=[1, 8, 8, 8])], inits)


def residual(dead: list[int]) -> onnx.ModelProto:
    """stem Conv(3->16) -> Relu = a; block Conv(16->16) -> Relu -> Conv(16->16) = b; Add(a, b) ->
    Relu -> Conv(16->4). The Add ties the stem's and the block's last conv's channels."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["a"]),
        helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], name="block1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["b"], name="block2"),
        helper.make_node("Add", ["a", "b"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Conv", ["r", "w3"], ["y"], name="head"),
    ]
    inits = [
        _w("w0", _dead(rng, (16, 3, 3, 3), dead)),
        _w("b0", _bias(rng, 16, dead)),
        _w("w1", rng.standard_normal((16, 16, 3, 3)) * 0.2),
        _w("b1", rng.standard_normal(16) * 0.1),
        _w("w2", _dead(rng, (16, 16, 1, 1), dead)),
        _w("b2", _bias(rng, 16, dead)),
        _w("w3", rng.standard_normal((4, 16, 1, 1))),
    ]
    return make_model(nodes, [vi("x", shape=[1, 3, 8, 8])], [vi("y", shape=[1, 4, 8, 8])], inits)


def concat(dead: list[int]) -> onnx.ModelProto:
    """Two branches Conv(3->8) -> Relu concatenated on channels -> Conv(16->4); channels
    ``dead`` of the second branch are zero (they sit at offset 8 in the concat)."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["ca"], name="left"),
        helper.make_node("Relu", ["ca"], ["ra"]),
        helper.make_node("Conv", ["x", "wb", "bb"], ["cb"], name="right"),
        helper.make_node("Relu", ["cb"], ["rb"]),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "wc"], ["y"], name="fuse"),
    ]
    inits = [
        _w("wa", rng.standard_normal((8, 3, 1, 1))),
        _w("wb", _dead(rng, (8, 3, 1, 1), dead)),
        _w("bb", _bias(rng, 8, dead)),
        _w("wc", rng.standard_normal((4, 16, 1, 1))),
    ]
    return make_model(nodes, [vi("x", shape=[1, 3, 6, 6])], [vi("y", shape=[1, 4, 6, 6])], inits)


def depthwise(dead: list[int], groups: int = 16) -> onnx.ModelProto:
    """Conv(3->16) -> Relu -> Conv 3x3 group=``groups`` -> Relu -> Conv(16->4): depthwise
    (groups=16) passes channels through; a grouped convolution (groups=4) ties them."""
    rng = np.random.default_rng(3)
    bd = rng.standard_normal(16).astype(np.float32) * 0.1
    bd[dead] = 0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="expand"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["d"], name="dw", group=groups, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["rd"]),
        helper.make_node("Conv", ["rd", "w2"], ["y"], name="project"),
    ]
    inits = [
        _w("w1", _dead(rng, (16, 3, 1, 1), dead)),
        _w("b1", _bias(rng, 16, dead)),
        _w("wd", rng.standard_normal((16, 16 // groups, 3, 3))),
        _w("bd", bd),
        _w("w2", rng.standard_normal((4, 16, 1, 1))),
    ]
    return make_model(nodes, [vi("x", shape=[1, 3, 6, 6])], [vi("y", shape=[1, 4, 6, 6])], inits)


def flatten_gemm(dead: list[int]) -> onnx.ModelProto:
    """Conv(2->8) -> Relu -> MaxPool -> Flatten -> Gemm(8*2*2 -> 5): a channel is 4 features of
    the Gemm."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _w("w1", _dead(rng, (8, 2, 3, 3), dead)),
        _w("b1", _bias(rng, 8, dead)),
        _w("wg", rng.standard_normal((5, 32))),
        _w("bg", rng.standard_normal(5)),
    ]
    return make_model(nodes, [vi("x", shape=["n", 2, 4, 4])], [vi("y", shape=["n", 5])], inits)


def mlp_block(dead: list[int]) -> onnx.ModelProto:
    """x[n, s, 8] -> MatMul(8x32) + b -> Relu -> MatMul(32x8) + b -> Add(x) -> y: the 32 hidden
    units are one group; the residual stream (8) reaches the output."""
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((8, 32)).astype(np.float32)
    w1[:, dead] = 0
    b1 = rng.standard_normal(32).astype(np.float32) * 0.1
    b1[dead] = 0
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["o"], name="down"),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Add", ["x", "ob"], ["y"]),
    ]
    inits = [_w("w1", w1), _w("b1", b1), _w("w2", rng.standard_normal((32, 8))), _w("b2", rng.standard_normal(8))]
    return make_model(nodes, [vi("x", shape=["n", "s", 8])], [vi("y", shape=["n", "s", 8])], inits)


def attention(dead_heads: list[int], heads: int = 4, dim: int = 8) -> onnx.ModelProto:
    """One self-attention block in the exported form: Q/K/V projections, Reshape [n, s, h, d],
    Transpose, scores, Softmax, context, Transpose, Reshape [n, s, h*d], output projection whose
    rows for heads ``dead_heads`` are zero (those heads contribute nothing)."""
    rng = np.random.default_rng(6)
    hidden = heads * dim
    wo = rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.2
    for h in dead_heads:
        wo[h * dim : (h + 1) * dim] = 0
    nodes = []
    for p in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_proj"),
            helper.make_node("Add", [f"{p}0", f"b{p}"], [f"{p}1"]),
            helper.make_node("Reshape", [f"{p}1", "split_shape"], [f"{p}2"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["q2"], ["q3"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k2"], ["k3"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v2"], ["v3"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q3", "k3"], ["sc"]),
        helper.make_node("Div", ["sc", "scale"], ["scd"]),
        helper.make_node("Softmax", ["scd"], ["pr"], axis=-1),
        helper.make_node("MatMul", ["pr", "v3"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctxt", "merge_shape"], ["ctxm"]),
        helper.make_node("MatMul", ["ctxm", "wo"], ["o"], name="o_proj"),
        helper.make_node("Add", ["o", "bo"], ["y"]),
    ]
    inits = [_w(f"w{p}", rng.standard_normal((hidden, hidden)) * 0.3) for p in "qkv"]
    inits += [_w(f"b{p}", rng.standard_normal(hidden) * 0.1) for p in "qkv"]
    inits += [
        _w("wo", wo),
        _w("bo", rng.standard_normal(hidden) * 0.1),
        _w("scale", np.sqrt(dim)),
        numpy_helper.from_array(np.array([0, 0, heads, dim], np.int64), "split_shape"),
        numpy_helper.from_array(np.array([0, 0, hidden], np.int64), "merge_shape"),
    ]
    return make_model(nodes, [vi("x", shape=["n", "s", hidden])], [vi("y", shape=["n", "s", hidden])], inits)


# -- tests ---------------------------------------------------------------------------------------


def test_zero_channels_are_removed_and_outputs_are_unchanged():
    dead = [1, 4, 5, 9, 12, 14, 15, 3]
    proto = chain(dead)
    out, report = _prune(proto, sparsity=0.5, multiple=1, score="l2")
    _exact(proto, out)
    shapes = _shapes(out)
    assert shapes["w1"] == (8, 3, 3, 3) and shapes["w2"] == (8, 8, 1, 1)
    assert shapes["g"] == shapes["beta"] == shapes["mu"] == shapes["var"] == (8,)
    g = next(g for g in report.groups if "conv1" in g.sources)
    assert (g.channels, g.kept, g.sinks) == (16, 8, ["conv2"])
    assert report.flops_after < report.flops_before and report.params_after < report.params_before


def test_residual_add_ties_the_stem_and_the_block():
    dead = [0, 2, 7, 11]
    proto = residual(dead)
    out, report = _prune(proto, sparsity=0.25, multiple=1, score="l2", overrides=("block1=0",))
    _exact(proto, out)
    shapes = _shapes(out)
    assert shapes["w0"][0] == 12 and shapes["w2"][0] == 12  # both producers of the tied channels
    assert shapes["w1"][1] == 12 and shapes["w3"][1] == 12  # both readers
    tied = next(g for g in report.groups if "stem" in g.sources)
    assert set(tied.sources) == {"stem", "block2"} and set(tied.sinks) == {"block1", "head"}


def test_concat_offsets_reach_the_reader():
    dead = [1, 2, 5, 6]
    proto = concat(dead)
    out, report = _prune(proto, sparsity=0.5, multiple=1, score="l2", overrides=("left=0",))
    _exact(proto, out)
    assert _shapes(out)["wb"] == (4, 3, 1, 1) and _shapes(out)["wc"] == (4, 12, 1, 1)
    assert _shapes(out)["wa"] == (8, 3, 1, 1)


def test_depthwise_convolutions_pass_channels_through():
    dead = [0, 3, 8, 13]
    proto = depthwise(dead)
    out, report = _prune(proto, sparsity=0.25, multiple=1, score="l2")
    _exact(proto, out)
    dw = next(n for n in out.graph.node if n.name == "dw")
    assert next(a.i for a in dw.attribute if a.name == "group") == 12
    assert _shapes(out)["wd"] == (12, 1, 3, 3) and _shapes(out)["bd"] == (12,)
    assert _shapes(out)["w2"] == (4, 12, 1, 1)


def test_grouped_convolutions_tie_channels_and_are_left_whole():
    proto = depthwise([], groups=4)
    groups = find_groups(modelio.load(proto).model, None)
    g = next(g for g in groups if g.sources and g.sources[0][0].name == "expand")
    assert g.blocked is not None and "grouped convolution" in g.blocked
    out, report = _prune(proto, sparsity=0.5, multiple=1)
    assert _shapes(out)["w1"] == (16, 3, 1, 1)
    assert any("grouped convolution" in r.reason for r in report.groups)


def test_flatten_to_gemm_removes_a_block_of_features_per_channel():
    dead = [2, 5]
    proto = flatten_gemm(dead)
    out, report = _prune(proto, sparsity=0.25, multiple=1, score="l2")
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)}
    assert_equivalent(proto, out, rtol=1e-5, atol=1e-5, feeds=feeds)
    assert _shapes(out)["w1"] == (6, 2, 3, 3) and _shapes(out)["wg"] == (5, 24)


def test_mlp_hidden_units_are_pruned_and_the_residual_stream_is_not():
    dead = list(range(0, 32, 4))
    proto = mlp_block(dead)
    out, report = _prune(proto, sparsity=0.25, multiple=1, score="l2")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)}
    assert_equivalent(proto, out, rtol=1e-5, atol=1e-5, feeds=feeds)
    assert _shapes(out)["w1"] == (8, 24) and _shapes(out)["b1"] == (24,) and _shapes(out)["w2"] == (24, 8)
    stream = next(g for g in report.groups if "down" in g.sources)
    assert stream.kept == stream.channels and "reaches the graph" in stream.reason


def test_attention_heads_are_pruned_whole_and_reshapes_follow():
    proto = attention([1, 3])
    out, report = _prune(proto, sparsity=0.5, multiple=1, score="l2")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)}
    assert_equivalent(proto, out, rtol=1e-5, atol=1e-5, feeds=feeds)
    shapes = _shapes(out)
    assert shapes["wq"] == shapes["wk"] == shapes["wv"] == (32, 16) and shapes["wo"] == (16, 32)
    consts = {t.name: numpy_helper.to_array(t).tolist() for t in out.graph.initializer if t.data_type == TensorProto.INT64}
    assert [0, 0, 2, 8] in consts.values() and [0, 0, 16] in consts.values()
    heads = next(g for g in report.groups if "q_proj" in g.sources)
    assert (heads.channels, heads.kept) == (4, 2) and "attention heads of 8" in heads.reason
    _, no_heads = _prune(proto, sparsity=0.5, multiple=1, heads=False)
    assert all(g.kept == g.channels for g in no_heads.groups)


def test_graph_inputs_and_outputs_never_change():
    for proto in (chain([]), residual([]), concat([]), depthwise([]), flatten_gemm([]), mlp_block([]), attention([])):
        out, report = _prune(proto, sparsity=0.5, multiple=1)
        assert _interface(out) == _interface(proto)
        for g in report.groups:
            if "graph output" in g.reason:
                assert g.kept == g.channels


def test_kept_counts_round_up_to_the_multiple():
    assert keep_count(64, 1, 0.5, 8) == 32
    assert keep_count(60, 1, 0.5, 8) == 32  # 30 rounded up
    assert keep_count(6, 1, 0.5, 8) == 6  # fewer than the multiple: kept whole
    assert keep_count(12, 64, 0.5, 8) == 6  # heads of 64 entries: any count is a multiple of 8
    assert keep_count(10, 1, 0.99, 1) == 1
    out, report = _prune(chain([]), sparsity=0.3, multiple=8)
    assert _shapes(out)["w1"][0] == 16  # 11.2 kept, rounded up to 16: nothing removed
    assert "rounding up to a multiple of 8" in next(g for g in report.groups if g.sources == ["conv1"]).reason


def test_reconstruction_repairs_the_next_layer():
    proto = chain([])
    rng = np.random.default_rng(9)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(20)]
    held = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    sess = OrtRunner().session(proto)
    ref = np.concatenate([sess.run(None, f)[0] for f in held])
    figures = {}
    for recon in (False, True):
        out, report = _prune(proto, sparsity=0.5, multiple=1, score="l2", calibration=calib, reconstruct=recon)
        got = np.concatenate([OrtRunner().session(out).run(None, f)[0] for f in held])
        figures[recon] = cosine(ref, got)
    assert figures[True] > figures[False] + 0.02, figures


def test_the_budget_keeps_the_sensitive_group_whole():
    proto = residual([])
    rng = np.random.default_rng(9)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(20)]
    out, report = _prune(proto, sparsity=0.5, multiple=1, calibration=calib, reconstruct=False, min_cosine=0.95)
    assert report.stepped and not report.budget_missed
    assert min(report.output_cosine.values()) >= 0.95
    first = report.stepped[0]
    g = next(g for g in report.groups if first.startswith(f"g{g.id}:"))
    assert g.reason.startswith("budget")


def test_values_read_inside_subgraphs_block_their_group():
    rng = np.random.default_rng(0)
    body = helper.make_graph([helper.make_node("Relu", ["r"], ["t"])], "then", [], [vi("t", shape=[1, 8, 4, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["e"])], "else", [], [vi("e", shape=[1, 8, 4, 4])])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("If", ["cond"], ["i"], then_branch=body, else_branch=other),
        helper.make_node("Conv", ["i", "w2"], ["y"], name="conv2"),
    ]
    proto = make_model(
        nodes, [vi("x", shape=[1, 3, 4, 4]), vi("cond", TensorProto.BOOL, [])], [vi("y", shape=[1, 2, 4, 4])],
        [_w("w1", rng.standard_normal((8, 3, 1, 1))), _w("w2", rng.standard_normal((2, 8, 1, 1)))],
    )
    out, report = _prune(proto, sparsity=0.5, multiple=1)
    g = next(g for g in report.groups if g.sources == ["conv1"])
    assert g.kept == 8 and "subgraph" in g.reason


def _conv_chain(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, t = [], [], "x"
    for i in range(n):
        inits.append(_w(f"w{i}", rng.standard_normal((8, 8, 1, 1))))
        nodes += [helper.make_node("Conv", [t, f"w{i}"], [f"c{i}"]), helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        t = f"r{i}"
    nodes.append(helper.make_node("Identity", [t], ["y"]))
    return make_model(nodes, [vi("x", shape=[1, 8, 2, 2])], [vi("y", shape=[1, 8, 2, 2])], inits)


def test_linear_time_on_a_long_chain():
    timings = {}
    for n in (200, 800):
        model = modelio.load(_conv_chain(n)).model
        start = time.perf_counter()
        result = PruneChannels(sparsity=0.5, multiple=1, measure_latency=False)(model)
        timings[n] = time.perf_counter() - start
        assert result.stats["pruned_groups"] == n - 1  # every group but the last (the output)
    assert timings[800] < 8 * timings[200] + 1.0, timings


@pytest.mark.parametrize("builder", [chain, residual, concat, depthwise, flatten_gemm, mlp_block])
def test_pruned_models_run_with_inferred_shapes(builder):
    proto = builder([])
    out, _ = _prune(proto, sparsity=0.5, multiple=2)
    inferred = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    assert len(inferred.graph.node) == len(proto.graph.node)
