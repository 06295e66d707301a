"""float16 conversion: numerics close to float32 under onnxruntime, I/O types, kept ops and nodes,
boundary Casts, shared and overflowing constants, control flow, idempotence."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.errors import UsageError
from onnxforge.ir import Model, to_proto, verify
from onnxforge.passes.compression.fp16 import (
    DEFAULT_KEEP_OPS,
    FP16_MAX,
    ConvertFloat16,
    Float16Options,
    to_float16,
)
from onnxforge.passmanager import PassContext, PassResult

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _vi(name, elem=F32, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, arr, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _run(model: onnx.ModelProto, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-30)


def _convert(proto: onnx.ModelProto, **opts) -> tuple[Model, PassResult, onnx.ModelProto]:
    """Run the pass, verify the IR, export and pass the full onnx checker (strict shape inference)."""
    ir = modelio.load(proto).model
    result = ConvertFloat16(**opts)(ir)
    verify(ir)
    after = to_proto(ir)
    onnx.checker.check_model(after, full_check=True)
    return ir, result, after


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of the main graph (onnx inference, strict)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def _io(model: onnx.ModelProto) -> tuple[list[int], list[int]]:
    g = model.graph
    return [v.type.tensor_type.elem_type for v in g.input], [v.type.tensor_type.elem_type for v in g.output]


def _assert_idempotent(ir: Model, **opts) -> None:
    before = to_proto(ir).SerializeToString(deterministic=True)
    version = ir.version
    again = ConvertFloat16(**opts)(ir)
    assert again.modified is False
    assert ir.version == version
    assert to_proto(ir).SerializeToString(deterministic=True) == before


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
        helper.make_node("LayerNormalization", ["r", "g", "beta"], ["n"], name="ln", axis=-1),
        helper.make_node("Gemm", ["n", "w2", "b2"], ["logits"], name="gemm"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    inits = [
        _init("w1", rng.standard_normal((16, 32)) * 0.3),
        _init("b1", rng.standard_normal(32) * 0.1),
        _init("g", 1 + 0.1 * rng.standard_normal(32)),
        _init("beta", 0.1 * rng.standard_normal(32)),
        _init("w2", rng.standard_normal((32, 8)) * 0.3),
        _init("b2", rng.standard_normal(8) * 0.1),
    ]
    m = _model(nodes, [_vi("x", shape=["batch", 16])], [_vi("y", shape=["batch", 8])], inits)
    feeds = {"x": rng.standard_normal((4, 16)).astype(np.float32)}
    return m, feeds


def _cnn(seed=1):
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "cw1", "cb1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "cw2", "cb2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _init("cw1", rng.standard_normal((8, 3, 3, 3)) * 0.3),
        _init("cb1", rng.standard_normal(8) * 0.1),
        _init("cw2", rng.standard_normal((16, 8, 3, 3)) * 0.2),
        _init("cb2", rng.standard_normal(16) * 0.1),
        _init("fw", rng.standard_normal((10, 16)) * 0.3),
        _init("fb", rng.standard_normal(10) * 0.1),
    ]
    m = _model(nodes, [_vi("x", shape=[1, 3, 16, 16])], [_vi("y", shape=[1, 10])], inits)
    feeds = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    return m, feeds


# --------------------------------------------------------------------------------------------
# numbers and options
# --------------------------------------------------------------------------------------------
def test_to_float16_clamps_tiny_values_and_clips_large_ones():
    a = np.array([0.0, 1e-9, -1e-9, 1e-3, 7e4, -1e6, np.inf, np.nan], np.float32)
    out = to_float16(a)
    assert out.dtype == np.float16
    assert out[1] == np.float16(2.0**-24) and out[2] == -np.float16(2.0**-24)  # never 0, sign kept
    assert out[4] == FP16_MAX and out[5] == -FP16_MAX
    assert np.isposinf(out[6]) and np.isnan(out[7]) and out[0] == 0
    flushed = to_float16(np.array([1e-9, 1e-3], np.float32), min_positive=0.0)
    assert flushed[0] == 0 and flushed[1] != 0


def test_options_are_validated():
    assert Float16Options().keep_ops == DEFAULT_KEEP_OPS
    assert Float16Options(keep_ops=["Resize"]).keep_ops == ("Resize",)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="keep_ops"):
        ConvertFloat16(keep_ops="Resize")
    with pytest.raises(UsageError, match="min_positive"):
        ConvertFloat16(min_positive=1e-12)
    with pytest.raises(UsageError, match="overflow"):
        ConvertFloat16(overflow="saturate")
    with pytest.raises(UsageError, match="unknown option"):
        ConvertFloat16(keep_io=True)


# --------------------------------------------------------------------------------------------
# (1) MLP and CNN: close to float32, I/O types unchanged, float16 weights, checker passes
# --------------------------------------------------------------------------------------------
def _mlp_with_value_info():
    proto, feeds = _mlp()
    return onnx.shape_inference.infer_shapes(proto), feeds


@pytest.mark.parametrize("build", [_mlp, _cnn, _mlp_with_value_info], ids=["mlp", "cnn", "mlp-value-info"])
def test_model_converts_close_to_float32(build):
    proto, feeds = build()
    ir, result, after = _convert(proto)
    assert result.modified is True
    assert _io(after) == _io(proto) == ([F32], [F32])
    assert {t.data_type for t in after.graph.initializer} == {F16}
    assert len(after.graph.initializer) == len(proto.graph.initializer)  # converted in place
    casts = [n for n in after.graph.node if n.op_type == "Cast"]
    assert [helper.get_attribute_value(n.attribute[0]) for n in casts] == [F16, F32]  # input, output
    assert result.stats["inserted_casts"] == 2 and result.stats["kept_nodes"] == 0
    assert result.stats["converted_nodes"] == len(proto.graph.node)
    types = _types(after)
    assert all(types[o] == F16 for n in after.graph.node if n.op_type != "Cast" for o in n.output)
    ref = _run(proto, feeds)["y"]
    got = _run(after, feeds)["y"]
    assert got.dtype == np.float32
    assert _rel(got, ref) < 1e-2
    _assert_idempotent(ir)


# --------------------------------------------------------------------------------------------
# (2) keep_io_types=False
# --------------------------------------------------------------------------------------------
def test_float16_io_when_not_keeping_io_types():
    proto, feeds = _mlp()
    ir, result, after = _convert(proto, keep_io_types=False)
    assert _io(after) == ([F16], [F16])
    assert not [n for n in after.graph.node if n.op_type == "Cast"]
    assert "inserted_casts" not in result.stats
    got = _run(after, {"x": feeds["x"].astype(np.float16)})["y"]
    assert got.dtype == np.float16
    assert _rel(got, _run(proto, feeds)["y"]) < 1e-2


# --------------------------------------------------------------------------------------------
# (3) keep_nodes
# --------------------------------------------------------------------------------------------
def test_keep_nodes_keeps_a_named_node_in_float32_between_casts():
    proto, feeds = _mlp()
    ir, result, after = _convert(proto, keep_nodes=("relu1",))
    relu = next(n for n in after.graph.node if n.name == "relu1")
    types = _types(after)
    assert types[relu.input[0]] == F32 and types[relu.output[0]] == F32
    producer = {o: n for n in after.graph.node for o in n.output}
    before = producer[relu.input[0]]
    assert before.op_type == "Cast" and helper.get_attribute_value(before.attribute[0]) == F32
    assert types[before.input[0]] == F16
    readers = [n for n in after.graph.node if relu.output[0] in n.input]
    assert [n.op_type for n in readers] == ["Cast"] and helper.get_attribute_value(
        readers[0].attribute[0]
    ) == F16
    assert result.stats["kept_nodes"] == 1 and result.stats["inserted_casts"] == 4
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2
    _assert_idempotent(ir, keep_nodes=("relu1",))


# --------------------------------------------------------------------------------------------
# (4) Resize and Range stay float32
# --------------------------------------------------------------------------------------------
def test_resize_and_range_stay_float32():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xm"], name="mul"),
        helper.make_node("Resize", ["xm", "", "scales"], ["up"], name="resize", mode="linear"),
        helper.make_node("Range", ["start", "limit", "delta"], ["ramp"], name="range"),
        helper.make_node("Add", ["up", "ramp"], ["y"], name="add"),
    ]
    inits = [
        _init("w", rng.standard_normal((1, 1, 4, 4))),
        _init("scales", [1, 1, 2, 2]),
        _init("start", 0.0),
        _init("limit", 8.0),
        _init("delta", 1.0),
    ]
    proto = _model(nodes, [_vi("x", shape=[1, 1, 4, 4])], [_vi("y", shape=[1, 1, 8, 8])], inits)
    feeds = {"x": rng.standard_normal((1, 1, 4, 4)).astype(np.float32)}
    ir, result, after = _convert(proto)
    types = _types(after)
    by_name = {n.name: n for n in after.graph.node}
    resize, rng_node = by_name["resize"], by_name["range"]
    assert types[resize.input[0]] == F32 and types[resize.output[0]] == F32
    assert types["scales"] == F32  # fixed tensor(float) input: untouched
    assert all(types[i] == F32 for i in rng_node.input) and types[rng_node.output[0]] == F32
    assert {types["w"], types[by_name["mul"].output[0]], types[by_name["add"].output[0]]} == {F16}
    assert result.stats["kept_nodes"] == 2
    assert ir.graph.initializers["start"].const.data_type == F32
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2
    _assert_idempotent(ir)


def test_fixed_float_input_of_a_converted_op_keeps_float32():
    """Resize converted on request: X and the output go float16, ``scales`` stays float32."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="nearest")]
    proto = _model(
        nodes, [_vi("x", shape=[1, 1, 2, 2])], [_vi("y", shape=[1, 1, 4, 4])], [_init("scales", [1, 1, 2, 2])]
    )
    ir, result, after = _convert(proto, keep_ops=())
    types = _types(after)
    assert types["scales"] == F32 and types[after.graph.node[1].output[0]] == F16
    feeds = {"x": rng.standard_normal((1, 1, 2, 2)).astype(np.float32)}
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2


# --------------------------------------------------------------------------------------------
# (5) a constant shared by a kept and a converted node
# --------------------------------------------------------------------------------------------
def test_shared_initializer_gets_one_float16_copy():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 4)).astype(np.float32) + 0.1234567
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a"], name="keep_me"),
        helper.make_node("Mul", ["x", "w"], ["m"], name="mul1"),
        helper.make_node("Sub", ["m", "w"], ["s"], name="sub1"),
        helper.make_node("Add", ["a", "s"], ["y"], name="join"),
    ]
    proto = _model(nodes, [_vi("x", shape=[3, 4])], [_vi("y", shape=[3, 4])], [_init("w", w)])
    ir, result, after = _convert(proto, keep_nodes=("keep_me",))
    inits = {t.name: t for t in after.graph.initializer}
    assert set(inits) == {"w", "w_fp16"}
    assert inits["w"].data_type == F32 and np.array_equal(numpy_helper.to_array(inits["w"]), w)
    assert inits["w_fp16"].data_type == F16
    by_name = {n.name: n for n in after.graph.node}
    assert by_name["keep_me"].input[1] == "w"
    assert by_name["mul1"].input[1] == "w_fp16" and by_name["sub1"].input[1] == "w_fp16"
    assert result.stats["duplicated_constants"] == 1
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32)}
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2
    _assert_idempotent(ir, keep_nodes=("keep_me",))


def test_constant_node_and_cast_to_float_inside_converted_region():
    nodes = [
        helper.make_node("Cast", ["ids"], ["idsf"], name="cast_ids", to=F32),
        helper.make_node("Constant", [], ["c"], name="const", value_floats=[0.5, 0.25, 2.0]),
        helper.make_node("Mul", ["idsf", "c"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "x"], ["y"], name="add"),
    ]
    proto = _model(nodes, [_vi("ids", TensorProto.INT64, [3]), _vi("x", shape=[3])], [_vi("y", shape=[3])])
    ir, result, after = _convert(proto)
    by_name = {n.name: n for n in after.graph.node}
    assert helper.get_attribute_value(by_name["cast_ids"].attribute[0]) == F16
    assert result.stats["retyped_casts"] == 1
    const = by_name["const"]
    assert [a.name for a in const.attribute] == ["value"] and const.attribute[0].t.data_type == F16
    feeds = {"ids": np.array([1, 2, 3], np.int64), "x": np.array([0.1, 0.2, 0.3], np.float32)}
    np.testing.assert_allclose(_run(after, feeds)["y"], _run(proto, feeds)["y"], rtol=1e-3)
    _assert_idempotent(ir)


# --------------------------------------------------------------------------------------------
# (6) overflow
# --------------------------------------------------------------------------------------------
def _overflow_model():
    w = np.array([[1.0, 2.0], [1e6, 0.5]], np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "w"], ["m"], name="big_mul"),
        helper.make_node("Div", ["m", "d"], ["y"], name="div"),
    ]
    inits = [_init("w", w), _init("d", [[4e3]])]
    return _model(nodes, [_vi("x", shape=[2, 2])], [_vi("y", shape=[2, 2])], inits), w


def test_overflowing_weight_keeps_its_consumer_in_float32():
    proto, w = _overflow_model()
    ir, result, after = _convert(proto)
    assert result.stats["kept_overflow"] == 1 and result.stats["clipped_values"] == 0
    types = _types(after)
    mul = next(n for n in after.graph.node if n.name == "big_mul")
    assert types["w"] == F32 and types[mul.output[0]] == F32 and types[mul.input[0]] == F32
    feeds = {"x": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    got, ref = _run(after, feeds)["y"], _run(proto, feeds)["y"]
    assert _rel(got, ref) < 1e-3  # 1e6 * 3 / 4e3 = 750: representable after the Div
    _assert_idempotent(ir)


def test_kept_nodes_and_reasons_are_recorded_in_the_context():
    proto, _ = _overflow_model()
    ir = modelio.load(proto).model
    ctx = PassContext()
    ConvertFloat16(keep_nodes=("div",))(ir, ctx)
    kept = ctx.records["fp16"]["kept"]
    assert kept["div"] == "keep_nodes" and kept["big_mul"].startswith("overflow")


def test_overflow_clip_clips_and_counts():
    proto, _ = _overflow_model()
    ir, result, after = _convert(proto, overflow="clip")
    assert result.stats["clipped_values"] == 1 and "kept_overflow" not in result.stats
    w = numpy_helper.to_array(next(t for t in after.graph.initializer if t.name == "w"))
    assert w.dtype == np.float16 and w[1, 0] == FP16_MAX


# --------------------------------------------------------------------------------------------
# (7) control flow: the If node stays float32; captured values and its outputs get Casts
# --------------------------------------------------------------------------------------------
def test_if_node_stays_float32_with_casts_around_it():
    rng = np.random.default_rng(5)
    then_g = helper.make_graph(
        [helper.make_node("Add", ["h", "c1"], ["t_out"])],
        "then",
        [],
        [_vi("t_out", shape=[2, 4])],
        [_init("c1", [1.5, -0.5, 0.25, 2.0])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["h", "c2"], ["e_out"])],
        "else",
        [],
        [_vi("e_out", shape=[2, 4])],
        [_init("c2", [0.5, 2.0, -1.0, 3.0])],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["branch"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "h"], ["y"], name="add"),
    ]
    proto = _model(
        nodes,
        [_vi("x", shape=[2, 3]), _vi("cond", TensorProto.BOOL, [])],
        [_vi("y", shape=[2, 4])],
        [_init("w", rng.standard_normal((3, 4)))],
    )
    ir, result, after = _convert(proto)
    assert result.stats["kept_nodes"] == 1
    if_node = next(n for n in after.graph.node if n.op_type == "If")
    then_body = next(a.g for a in if_node.attribute if a.name == "then_branch")
    captured = then_body.node[0].input[0]
    producer = {o: n for n in after.graph.node for o in n.output}
    assert producer[captured].op_type == "Cast" and producer[captured].input[0] == "h"
    assert then_body.initializer[0].data_type == F32  # bodies untouched
    types = _types(after)
    assert types["h"] == F16 and types["branch"] == F32
    relu = next(n for n in after.graph.node if n.name == "relu")
    assert producer[relu.input[0]].op_type == "Cast" and types[relu.output[0]] == F16
    counts = collections.Counter(n.op_type for n in after.graph.node)
    assert counts["Cast"] == 4  # x, captured h, If output, y
    for cond in (True, False):
        feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32), "cond": np.array(cond)}
        assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2
    _assert_idempotent(ir)


def test_custom_domain_op_stays_float32():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("FastGelu", ["r"], ["g"], name="fast_gelu", domain="com.microsoft"),
        helper.make_node("Mul", ["g", "x"], ["y"], name="mul"),
    ]
    g = helper.make_graph(nodes, "g", [_vi("x", shape=[2, 4])], [_vi("y", shape=[2, 4])])
    proto = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    proto.ir_version = 8
    ir = modelio.load(proto).model
    result = ConvertFloat16()(ir)
    after = to_proto(ir)
    onnx.checker.check_model(after)
    assert result.stats["kept_nodes"] == 1 and result.stats["inserted_casts"] == 4
    feeds = {"x": np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)}
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2


# --------------------------------------------------------------------------------------------
# (8) idempotence on a model with everything at once
# --------------------------------------------------------------------------------------------
def test_second_run_changes_nothing():
    proto, _ = _mlp()
    ir, result, _ = _convert(proto, keep_nodes=("ln",), keep_io_types=False)
    assert result.modified
    _assert_idempotent(ir, keep_nodes=("ln",), keep_io_types=False)


def test_graph_output_read_inside_keeps_its_name_and_type():
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
    ]
    proto = _model(
        nodes,
        [_vi("x", shape=[2, 3])],
        [_vi("h", shape=[2, 4]), _vi("y", shape=[2, 4]), _vi("x", shape=[2, 3])],
        [_init("w", rng.standard_normal((3, 4)))],
    )
    ir, result, after = _convert(proto)
    assert [o.name for o in after.graph.output] == ["h", "y", "x"]
    assert _io(after) == _io(proto)
    tanh = next(n for n in after.graph.node if n.name == "tanh")
    assert _types(after)[tanh.input[0]] == F16 and tanh.input[0] != "h"
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32)}
    got, ref = _run(after, feeds), _run(proto, feeds)
    assert all(_rel(got[k], ref[k]) < 1e-2 for k in ref) and np.array_equal(got["x"], feeds["x"])
    _assert_idempotent(ir)


def test_loop_stays_float32_and_reads_a_cast_of_the_captured_value():
    rng = np.random.default_rng(7)
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "h"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("acc_in", shape=[2, 4])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", shape=[2, 4])],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Loop", ["n", "", "zero"], ["acc"], name="loop", body=body),
        helper.make_node("Mul", ["acc", "h"], ["y"], name="mul"),
    ]
    inits = [
        _init("w", rng.standard_normal((3, 4))),
        _init("zero", np.zeros((2, 4))),
        _init("n", 3, np.int64),
    ]
    proto = _model(nodes, [_vi("x", shape=[2, 3])], [_vi("y", shape=[2, 4])], inits)
    ir, result, after = _convert(proto)
    types = _types(after)
    assert types["acc"] == F32 and types["zero"] == F32 and types["h"] == F16
    loop = next(n for n in after.graph.node if n.op_type == "Loop")
    inner_add = loop.attribute[0].g.node[0]
    assert inner_add.input[1] == "h_fp32"
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32)}
    assert _rel(_run(after, feeds)["y"], _run(proto, feeds)["y"]) < 1e-2
    _assert_idempotent(ir)
