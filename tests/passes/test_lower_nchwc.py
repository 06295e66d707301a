"""lower-nchwc: convolution regions in onnxruntime's NCHWc layout compute what they computed,
on onnxruntime's CPU provider with its optimizer off (the layout is this machine's)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from corpus_required import probe_failed
from onnx import TensorProto, helper
from pass_helpers import const, make_model, vi

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner, assert_equivalent
from onnxforge.errors import ModelError, UsageError
from onnxforge.ir import to_proto
from onnxforge.kernels.nchwc import from_blocked, reorder_filter_oihwbibo, reorder_filter_oihwbo, to_blocked
from onnxforge.passes import LowerNchwc, ShapeInference
from onnxforge.pipelines import get_pipeline
from onnxforge.runtime import choices as ort_choices

F = TensorProto.FLOAT
RNG = np.random.default_rng(3)
PROBE = ort_choices.nchwc_probe()
BLOCK = PROBE.block


@pytest.fixture
def nchwc_kernels() -> int:
    """This CPU's NCHWc block. Skips where onnxruntime really has no NCHWc kernels here; a probe
    that crashed or found another filter layout is a failure under CI (``probe_failed``)."""
    if PROBE.status != "ok" and PROBE.status != "no-kernels":
        probe_failed(f"the NCHWc probe did not work ({PROBE.status}: {PROBE.detail})")
    if BLOCK == 0:
        pytest.skip(f"onnxruntime has no NCHWc kernels on this CPU ({PROBE.detail})")
    return BLOCK


needs_nchwc = pytest.mark.usefixtures("nchwc_kernels")


def rnd(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def lower(proto: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None, **opts):  # type: ignore[no-untyped-def]
    model = modelio.load(proto).model
    ShapeInference()(model)
    result = LowerNchwc(**opts)(model)
    after = to_proto(model)
    onnx.checker.check_model(after)
    assert_equivalent(proto, after, feeds=feeds, rtol=1e-4, atol=1e-5)
    return result, after


def nchwc_ops(m: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in m.graph.node if n.domain == "com.microsoft.nchwc")


def test_filter_layouts_match_onnxruntimes_own():
    w = rnd(20, 7, 3, 3)
    b = reorder_filter_oihwbibo(w, 8)
    assert b.shape == (24, 8, 3, 3)
    # block (o=0..7) of input channel 0 at tap (0, 0) comes first, then input channel 1
    assert np.array_equal(b.reshape(-1)[:8], w[:8, 0, 0, 0]) and np.array_equal(b.reshape(-1)[8:16], w[:8, 1, 0, 0])
    o = reorder_filter_oihwbo(w, 8)
    assert o.shape == (24, 7, 3, 3) and np.array_equal(o.reshape(-1)[8:16], w[:8, 0, 0, 1])
    x = rnd(2, 20, 3, 5)
    assert np.array_equal(from_blocked(to_blocked(x, 8), 8, 20), x)
    if BLOCK:  # the probe found onnxruntime writing exactly these layouts
        assert ort_choices._probe_nchwc() == BLOCK


def _cnn(out_channels: int = 24) -> onnx.ModelProto:
    """Stem conv on a 3-channel input, depthwise + pointwise with a residual Add and a Relu
    after it, max pooling, global average pooling and a Gemm head."""
    c = out_channels
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["s"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["s6"]),
        helper.make_node("Conv", ["s6", "wd", "bd"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Relu", ["d"], ["dr"]),
        helper.make_node("Conv", ["dr", "wp", "bp"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["p", "s6"], ["r"]),
        helper.make_node("Relu", ["r"], ["rr"]),
        helper.make_node("MaxPool", ["rr"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["mp"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1),
    ]
    inits = [
        const("w0", rnd(c, 3, 3, 3)),
        const("b0", rnd(c)),
        const("lo", 0.0),
        const("hi", 6.0),
        const("wd", rnd(c, 1, 3, 3)),
        const("bd", rnd(c)),
        const("wp", rnd(c, c, 1, 1)),
        const("bp", rnd(c)),
        const("wg", rnd(10, c)),
    ]
    return make_model(nodes, [vi("x", F, [1, 3, 32, 32])], [vi("y", F, [1, 10])], inits)


@needs_nchwc
@pytest.mark.parametrize("channels", [BLOCK or 16, 24, 40])
def test_cnn_block_is_lowered_whole_and_keeps_outputs(channels):
    result, after = lower(_cnn(channels))
    ops = nchwc_ops(after)
    assert ops["Conv"] == 3 and ops["MaxPool"] == 1 and ops["GlobalAveragePool"] == 1
    assert ops["ReorderOutput"] == 1 and ops["ReorderInput"] == 0  # one exit, the stem reads NCHW
    plain = Counter(n.op_type for n in after.graph.node if n.domain == "")
    assert plain == Counter({"Flatten": 1, "Gemm": 1})  # Clip, Relus and the Add are fused
    assert result.stats["fused_sums"] == 1 and result.stats["fused_activations"] == 3
    meta = {p.key: p.value for p in after.metadata_props}
    assert meta["onnxforge.nchwc_block_size"] == str(BLOCK)
    assert any(o.domain == "com.microsoft.nchwc" for o in after.opset_import)


def _dynamic_block(c: int = 24) -> onnx.ModelProto:
    """Dynamic H and W: hard-swish spelled out, a squeeze-excitation scale, a residual whose
    sizes inference cannot prove equal, nearest 2x upsampling and a channel concat."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "three"], ["a3"]),
        helper.make_node("Clip", ["a3", "lo", "hi"], ["ac"]),
        helper.make_node("Mul", ["a", "ac"], ["am"]),
        helper.make_node("Div", ["am", "six"], ["hs"]),
        helper.make_node("GlobalAveragePool", ["hs"], ["g"]),
        helper.make_node("Conv", ["g", "w1", "b1"], ["g1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["g1"], ["g1r"]),
        helper.make_node("Conv", ["g1r", "w2", "b2"], ["g2"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["g2"], ["se"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["hs", "se"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w3"], ["c3"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Add", ["c3", "hs"], ["res"]),
        helper.make_node("Resize", ["res", "", "scales"], ["up"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Conv", ["up", "w4"], ["u4"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["u4", "u4"], ["cat"], axis=1),
        helper.make_node("ConvTranspose", ["cat", "wt"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    b = BLOCK or 16
    inits = [
        const("w0", rnd(c, 3, 3, 3)),
        const("three", 3.0),
        const("lo", 0.0),
        const("hi", 6.0),
        const("six", 6.0),
        const("w1", rnd(8, c, 1, 1)),
        const("b1", rnd(8)),
        const("w2", rnd(c, 8, 1, 1)),
        const("b2", rnd(c)),
        const("w3", rnd(c, c, 3, 3)),
        const("scales", [1.0, 1.0, 2.0, 2.0]),
        const("w4", rnd(b, c, 1, 1)),
        const("wt", rnd(2 * b, 4, 2, 2)),
    ]
    return make_model(nodes, [vi("x", F, [1, 3, "h", "w"])], [vi("y", F, [1, 4, None, None])], inits, opset=13)


@needs_nchwc
def test_dynamic_sizes_squeeze_excitation_and_upsampling():
    feeds = {"x": RNG.standard_normal((1, 3, 12, 20)).astype(np.float32)}
    proto = _dynamic_block()
    result, after = lower(proto, feeds)
    ops = nchwc_ops(after)
    assert ops["Conv"] == 5 and ops["Upsample"] == 1 and ops["GlobalAveragePool"] == 1
    assert ops["ReorderInput"] == 0 and ops["ReorderOutput"] == 1  # only ConvTranspose reads plain
    assert result.stats["split_views"] >= 1  # the SE scale and the unproven residual
    plain = Counter(n.op_type for n in after.graph.node if n.domain == "")
    assert plain["ConvTranspose"] == 1 and plain["Concat"] == 1
    # Other sizes give the same answers as the original too.
    assert_equivalent(proto, after, feeds={"x": RNG.standard_normal((1, 3, 7, 9)).astype(np.float32)}, rtol=1e-4, atol=1e-5)


@needs_nchwc
def test_graph_outputs_keep_name_and_layout_and_unsupported_readers_get_plain_tensors():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1]),
        helper.make_node("Softmax", ["r"], ["s"], axis=1),  # not lowered: reads the plain tensor
    ]
    b = BLOCK or 16
    proto = make_model(
        nodes, [vi("x", F, [1, b, 5, 5])], [vi("y", F, [1, 5, 5, 5]), vi("r", F, [1, b, 5, 5]), vi("s", F, [1, b, 5, 5])], [const("w", rnd(b, b, 1, 1)), const("w2", rnd(5, b, 1, 1))]
    )
    result, after = lower(proto)
    assert [o.name for o in after.graph.output] == ["y", "r", "s"]
    ops = nchwc_ops(after)
    assert ops["ReorderInput"] == 1 and ops["ReorderOutput"] == 2  # r (output + Softmax), y
    # A second run finds nothing left to lower.
    model = modelio.load(after).model
    ShapeInference()(model)
    assert LowerNchwc()(model).modified is False


def test_unsupported_machine_or_graph_is_left_alone(monkeypatch):
    proto = _cnn(24)
    model = modelio.load(proto).model
    monkeypatch.setattr(ort_choices, "nchwc_block_size", lambda **_: 0)
    res = LowerNchwc()(model)
    assert res.modified is False and res.stats["block_size"] == 0
    # No convolution at all: nothing changes either.
    mlp = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [1, 16, 4, 4])], [vi("y", F, [1, 16, 4, 4])])
    assert LowerNchwc(block_size=8)(modelio.load(mlp).model).modified is False


def test_cpu_native_target_ends_with_the_lowering():
    names = [p.name for p in get_pipeline("optimize", None, "cpu-native").leaves()]
    assert names[-1] == "lower-nchwc" and "fuse-onnxruntime" in names
    assert "lower-nchwc" not in [p.name for p in get_pipeline("optimize", None, "cpu").leaves()]
    assert "lower-nchwc" not in [p.name for p in get_pipeline("int8", None, "cpu-native").leaves()]
    with pytest.raises(UsageError, match="block_size"):
        LowerNchwc(block_size=3)


def _convs(x_shapes: list[tuple[str, list]], tail: list[onnx.NodeProto], out_shape: list, opset: int = 17) -> onnx.ModelProto:
    """One 3x3 'same' conv (32 -> 32 channels) per input, named c0, c1, ..., then ``tail``."""
    nodes = [
        helper.make_node("Conv", [name, f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        for i, (name, _) in enumerate(x_shapes)
    ]
    inits = [const(f"w{i}", rnd(32, 32, 3, 3)) for i in range(len(x_shapes))]
    inputs = [vi(name, F, shape) for name, shape in x_shapes]
    return make_model(nodes + tail, inputs, [vi("y", F, out_shape)], inits, opset=opset)


@needs_nchwc
def test_variadic_max_and_rank5_scalars_stay_plain():
    # Max/Min take any number of operands: only the two-operand form is lowered.
    xs = [(f"x{i}", [1, 32, 8, 8]) for i in range(3)]
    _, after = lower(_convs(xs, [helper.make_node("Max", ["c0", "c1", "c2"], ["y"])], [1, 32, 8, 8]))
    assert [n.op_type for n in after.graph.node if n.domain == ""] == ["Max"]
    # A one-element constant of rank 5 would make the blocked tensor 5-D.
    tail = [helper.make_node("Mul", ["c0", "k"], ["y"])]
    proto = _convs(xs[:1], tail, [1, 1, 32, 8, 8])
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.full((1, 1, 1, 1, 1), 2.0, np.float32), "k"))
    _, after = lower(proto)
    assert [n.op_type for n in after.graph.node if n.domain == ""] == ["Mul"]


@needs_nchwc
@pytest.mark.parametrize("batch", [(1, 2), (2, 1), ("n", "m")])
def test_residual_add_is_fused_into_the_conv_only_with_equal_batch_sizes(batch):
    # Add broadcasts a batch of 1; the nchwc Conv's Sum input does not.
    xs = [("x0", [batch[0], 32, 8, 8]), ("x1", [batch[1], 32, 8, 8])]
    proto = _convs(xs, [helper.make_node("Add", ["c0", "c1"], ["y"])], [None, 32, 8, 8])
    feeds = {"x0": rnd(1, 32, 8, 8), "x1": rnd(2, 32, 8, 8)} if batch == ("n", "m") else None
    result, after = lower(proto, feeds)
    assert result.stats.get("fused_sums", 0) == 0
    same = _convs([("x0", [2, 32, 8, 8]), ("x1", [2, 32, 8, 8])], [helper.make_node("Add", ["c0", "c1"], ["y"])], [2, 32, 8, 8])
    assert lower(same)[0].stats["fused_sums"] == 1


@needs_nchwc
def test_average_pool_with_ceil_mode_and_count_include_pad_stays_plain():
    # Even sizes: the last window runs past the padded edge, and onnxruntime's NCHWc kernel
    # divides it differently (its own NCHWc transformer skips this combination too).
    pool = helper.make_node("AveragePool", ["c0"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)
    _, after = lower(_convs([("x0", [1, 32, 16, 16])], [pool], [1, 32, 9, 9]))
    assert nchwc_ops(after)["AveragePool"] == 0


@needs_nchwc
def test_ceil_mode_pools_get_their_own_spatial_key():
    # At H = W = 2, a stride-2 pool gives 1x1 with floor and 2x2 with ceil rounding; the Add
    # broadcasts them, so it must not run directly on the blocked tensors.
    tail = [
        helper.make_node("MaxPool", ["c0"], ["f"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0]),
        helper.make_node("MaxPool", ["c0"], ["c"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1),
        helper.make_node("Add", ["f", "c"], ["y"]),
    ]
    proto = _convs([("x0", [1, 32, "h", "w"])], tail, [1, 32, None, None])
    result, _ = lower(proto, {"x0": rnd(1, 32, 2, 2)})
    assert result.stats["split_views"] == 1


@needs_nchwc
def test_a_model_lowered_for_another_block_size_is_refused_before_it_runs(monkeypatch, tmp_path):
    _, after = lower(_cnn())
    meta = {m.key: m.value for m in after.metadata_props}
    assert meta[ort_choices.NCHWC_METADATA_KEY] == str(BLOCK)
    ort_choices.check_nchwc_block(meta)  # this machine: fine
    # Another CPU (AVX2 only, or ARM): the same file would compute garbage without an error.
    for other in (8 if BLOCK == 16 else 16, 0):
        monkeypatch.setattr(ort_choices, "nchwc_block_size", lambda other=other: other)
        with pytest.raises(ModelError, match="lowered to onnxruntime's NCHWc layout for a channel block of"):
            ort_choices.check_nchwc_block(meta)
        path = tmp_path / "lowered.onnx"
        onnx.save(after, path)
        with pytest.raises(ModelError):
            OrtRunner().session(path)


@needs_nchwc
def test_a_model_lowered_for_another_block_is_not_lowered_again():
    # Ops lowered earlier for another block would read the wrong layout next to the new ones.
    proto = _cnn()
    assert LowerNchwc()(modelio.load(proto).model).modified
    onnx.helper.set_model_props(proto, {ort_choices.NCHWC_METADATA_KEY: "8" if BLOCK == 16 else "16"})
    assert LowerNchwc()(modelio.load(proto).model).modified is False
