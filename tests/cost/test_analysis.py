"""The cost model on whole models: totals, weights, control flow, dynamic shapes, memory."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.cost import analyze
from onnxforge.cost.roofline import H100
from onnxforge.errors import UsageError
from onnxforge.ir import from_proto

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def init(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def model(nodes, inputs, outputs, inits=(), opset: int = 17, **kw) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *kw.get("extra_opsets", [])])
    m.ir_version = 8
    return m


def vi(name: str, shape, et: int = F) -> onnx.ValueInfoProto:  # type: ignore[no-untyped-def]
    return helper.make_tensor_value_info(name, et, shape)


def run(proto: onnx.ModelProto, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("target", H100)
    return analyze(from_proto(proto), **kw)


def cnn(weights_as_constant_nodes: bool = False) -> onnx.ModelProto:
    inits = [init("W", 4, 3, 3, 3), init("B", 4), init("Wfc", 10, 4), init("bfc", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wfc", "bfc"], ["y"], transB=1, name="fc"),
    ]
    if weights_as_constant_nodes:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in inits] + nodes
        inits = []
    return model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 10])], inits)


def test_small_cnn_totals_match_hand_count() -> None:
    r = run(cnn())
    assert r.totals.macs == 256 * 27 + 40
    conv_flops, relu, gap, fc = 2 * 6912 + 256, 256, 256 + 4, 2 * 40 + 10
    assert r.totals.flops == conv_flops + relu + gap + fc
    assert r.totals.params == 108 + 4 + 40 + 10
    assert r.totals.weight_bytes == 4 * 162
    by_op = r.by_op_type()
    assert by_op["Conv"]["macs"] == 6912 and by_op["Gemm"]["params"] == 50
    conv = next(n for n in r.nodes if n.name == "conv")
    assert conv.input_bytes == 3 * 64 * 4 and conv.output_bytes == 256 * 4
    assert conv.bound in ("compute", "memory") and conv.est_ms > 0
    assert r.to_dict()["total"]["est_latency_ms"] > 0


def test_weights_in_constant_nodes_count_as_parameters() -> None:
    r = run(cnn(weights_as_constant_nodes=True))
    assert r.totals.params == 162 and r.totals.macs == 6912 + 40


def test_shared_weight_counts_once() -> None:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("MatMul", ["a", "W"], ["y"])]
    r = run(model(nodes, [vi("x", [2, 8])], [vi("y", [2, 8])], [init("W", 8, 8)]))
    assert r.totals.params == 64 and r.totals.macs == 2 * 2 * 8 * 8
    assert sum(n.params for n in r.nodes) == r.totals.params


def test_int64_shape_data_is_not_a_parameter() -> None:
    shape = numpy_helper.from_array(np.array([4, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    r = run(model(nodes, [vi("x", [16])], [vi("y", [4, 4])], [shape]))
    assert r.totals.params == 0


def _if_model() -> onnx.ModelProto:
    big = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["t"], name="then_mm")], "then", [], [vi("t", [2, 16])], [init("W1", 16, 16)]
    )
    small = helper.make_graph([helper.make_node("Relu", ["x"], ["e"], name="else_relu")], "else", [], [vi("e", [2, 16])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=big, else_branch=small, name="if")]
    return model(nodes, [vi("cond", [], TensorProto.BOOL), vi("x", [2, 16])], [vi("y", [2, 16])])


def test_if_counts_the_heavier_branch_and_every_stored_weight() -> None:
    r = run(_if_model())
    assert r.totals.macs == 2 * 16 * 16
    relu = next(n for n in r.nodes if n.name == "else_relu")
    mm = next(n for n in r.nodes if n.name == "then_mm")
    assert not relu.counted and mm.counted and mm.graph.endswith("then_branch")
    assert r.totals.params == 256


def _loop_model(trip: onnx.TensorProto | None) -> onnx.ModelProto:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h", "W"], ["h_out"], name="body_mm"),
        ],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("h", [1, 8])],
        [vi("cond_out", [], TensorProto.BOOL), vi("h_out", [1, 8])],
    )
    inits = [init("W", 8, 8), numpy_helper.from_array(np.array(True), "c0")]
    inputs = [vi("x", [1, 8])]
    if trip is not None:
        inits.append(trip)
    else:
        inputs.append(vi("M", [], TensorProto.INT64))
    nodes = [helper.make_node("Loop", ["M", "c0", "x"], ["y"], body=body, name="loop")]
    return model(nodes, inputs, [vi("y", [1, 8])], inits)


def test_loop_multiplies_its_body_by_a_constant_trip_count() -> None:
    r = run(_loop_model(numpy_helper.from_array(np.array(3, np.int64), "M")))
    assert r.totals.macs == 3 * 64
    mm = next(n for n in r.nodes if n.name == "body_mm")
    assert mm.runs == 3 and r.by_op_type()["MatMul"]["macs"] == 3 * 64


def test_loop_with_runtime_trip_count_counts_once_and_says_so() -> None:
    r = run(_loop_model(None))
    assert r.totals.macs == 64
    assert any("trip count" in n for n in r.notes)


def test_scan_counts_its_body_per_slice() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "xi"], ["s2"]), helper.make_node("MatMul", ["s2", "W"], ["s_out"], name="scan_mm")],
        "body",
        [vi("s", [1, 4]), vi("xi", [1, 4])],
        [vi("s_out", [1, 4])],
    )
    nodes = [helper.make_node("Scan", ["s0", "xs"], ["s_final"], body=body, num_scan_inputs=1, name="scan")]
    m = model(nodes, [vi("s0", [1, 4]), vi("xs", [5, 1, 4])], [vi("s_final", [1, 4])], [init("W", 4, 4)])
    r = run(m)
    assert r.totals.macs == 5 * 16


def test_unknown_op_counts_zero_and_is_listed() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Mystery", ["a"], ["b"], domain="custom.domain", name="mystery"),
        helper.make_node("Relu", ["b"], ["y"], name="after"),
    ]
    m = model(nodes, [vi("x", [4])], [vi("y", [4])], extra_opsets=[helper.make_opsetid("custom.domain", 1)])
    m.graph.value_info.append(vi("b", [4]))
    r = run(m)
    assert r.no_formula() == {"custom.domain::Mystery": 1}
    assert r.to_dict()["no_formula"] == {"custom.domain::Mystery": 1}
    after = next(n for n in r.nodes if n.name == "after")
    assert after.flops == 4  # the declared output type still gives its shape
    assert any("no cost formula" in n for n in r.notes)


def test_dynamic_dims_are_bound_by_shape_specs_or_assumed() -> None:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    m = model(nodes, [vi("x", ["batch", 8])], [vi("y", ["batch", 4])], [init("W", 8, 4)])
    assumed = run(m)
    assert assumed.totals.macs == 32
    assert assumed.bindings.assumptions == ["input 'x' dim 0 ('batch') assumed 1"]
    assert run(m, shapes={"x": (6, 8)}).totals.macs == 6 * 32
    bound = run(m, dims={"batch": 5})
    assert bound.totals.macs == 5 * 32 and bound.bindings.assumptions == []
    with pytest.raises(UsageError, match="not a model input"):
        run(m, shapes={"nope": (1, 8)})
    with pytest.raises(UsageError, match="rank"):
        run(m, shapes={"x": (1, 8, 1)})
    with pytest.raises(UsageError, match="contradicts"):
        run(m, shapes={"x": (1, 7)})


def test_data_dependent_shapes_are_measured_by_the_probe() -> None:
    # Reshape to a shape computed from the values of another input: no static inference.
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("MatMul", ["r", "W"], ["y"], name="mm"),
    ]
    m = model(nodes, [vi("x", [12]), vi("s", [2], TensorProto.INT64)], [vi("y", None)], [init("W", 4, 5)])
    static = run(m, probe=False)
    assert static.unresolved() == ["mm"] or "mm" in static.unresolved()
    probed = run(m, feeds={"s": np.array([3, 4], np.int64), "x": np.ones(12, np.float32)})
    assert probed.unresolved() == []
    assert probed.totals.macs == 3 * 4 * 5
    assert any("measured" in n for n in probed.notes)


def test_the_probe_runs_a_model_whose_untaken_branch_fails_at_concrete_shapes() -> None:
    # Silero VAD's pattern: the branch for the other sample rate squeezes a dim that is 2 here.
    # Declared at their concrete shapes, the inputs let onnxruntime's type inference specialize
    # that branch, and session creation fails; the probe retries with the dims left open.
    then = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["t"], name="mm")],
        "then", [], [vi("t", None)],
    )
    other = helper.make_graph(
        [helper.make_node("Squeeze", ["x2", "ax"], ["q"]), helper.make_node("ReduceSum", ["q"], ["e"], keepdims=0)],
        "else", [], [vi("e", None)],
    )
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    inputs = [vi("x", [12]), vi("x2", [1, 2, 4]), vi("s", [2], TensorProto.INT64), vi("c", [], TensorProto.BOOL)]
    ax = numpy_helper.from_array(np.array([1], np.int64), "ax")
    m = model(nodes, inputs, [vi("y", None)], [init("W", 4, 5), ax])
    feeds = {"s": np.array([3, 4], np.int64), "x": np.ones(12, np.float32), "c": np.array(True),
             "x2": np.ones((1, 2, 4), np.float32)}
    probed = run(m, feeds=feeds)
    assert "mm" not in probed.unresolved()
    assert probed.totals.macs == 3 * 4 * 5


def test_peak_activation_memory_and_a_better_order() -> None:
    n = 1 << 12
    shape = numpy_helper.from_array(np.array([n, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Expand", ["x", "shape"], ["big1"], name="e1"),
        helper.make_node("Expand", ["x", "shape"], ["big2"], name="e2"),
        helper.make_node("ReduceSum", ["big1"], ["s1"], keepdims=0, name="r1"),
        helper.make_node("ReduceSum", ["big2"], ["s2"], keepdims=0, name="r2"),
        helper.make_node("Add", ["s1", "s2"], ["y"], name="add"),
    ]
    m = model(nodes, [vi("x", [1, 64])], [vi("y", [])], [shape])
    r = run(m)
    big = n * 64 * 4
    assert r.totals.peak_activation_bytes == 2 * big + 64 * 4
    assert r.memory.peak_node == "e2"
    assert r.reordered_memory is not None
    assert r.reordered_memory.peak_bytes == big + 64 * 4 + 4
    assert r.to_dict()["memory"]["reordered_peak_activation_bytes"] == r.reordered_memory.peak_bytes


def test_roofline_marks_big_products_compute_bound_and_adds_memory_bound() -> None:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Add", ["h", "h"], ["y"], name="add")]
    m = model(nodes, [vi("x", [2048, 1024])], [vi("y", [2048, 1024])], [init("W", 1024, 1024)])
    r = run(m)
    bound = {n.name: n.bound for n in r.nodes}
    assert bound == {"mm": "compute", "add": "memory"}


def test_json_schema_has_the_documented_keys() -> None:
    d = run(cnn()).to_dict()
    assert set(d["total"]) >= {"macs", "flops", "params", "weight_bytes", "peak_activation_bytes", "est_latency_ms"}
    assert "Conv" in d["by_op_type"] and len(d["nodes"]) == 5
    assert set(d["nodes"][0]) >= {"name", "op_type", "macs", "flops", "params", "arithmetic_intensity", "bound"}


def test_analysis_does_not_modify_the_model() -> None:
    ir = from_proto(_if_model())
    v = ir.version
    analyze(ir, target=H100)
    assert ir.version == v


def test_dynamic_quantization_graph_is_costed() -> None:
    # What onnxruntime's dynamic quantizer emits: DynamicQuantizeLinear -> MatMulInteger -> rescale.
    wq = numpy_helper.from_array(RNG.integers(-127, 127, (8, 4), dtype=np.int8), "Wq")
    wzp = numpy_helper.from_array(np.array(0, np.int8), "Wzp")
    ws = numpy_helper.from_array(np.array(0.01, np.float32), "Ws")
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"], name="dql"),
        helper.make_node("MatMulInteger", ["xq", "Wq", "xzp", "Wzp"], ["acc"], name="mmi"),
        helper.make_node("Cast", ["acc"], ["accf"], to=F),
        helper.make_node("Mul", ["xs", "Ws"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["y"]),
        helper.make_node("GlobalMaxPool", ["img"], ["pooled"], name="gmp"),
    ]
    m = model(nodes, [vi("x", [2, 8]), vi("img", [1, 3, 4, 4])], [vi("y", [2, 4]), vi("pooled", [1, 3, 1, 1])], [wq, wzp, ws])
    r = run(m)
    assert r.no_formula() == {} and r.unresolved() == []
    assert r.totals.macs == 2 * 8 * 4
    assert next(n for n in r.nodes if n.name == "dql").flops == 5 * 16
    assert next(n for n in r.nodes if n.name == "gmp").flops == 48
    assert r.totals.params == 32 + 1 + 1 and r.totals.weight_bytes == 32 + 1 + 4
