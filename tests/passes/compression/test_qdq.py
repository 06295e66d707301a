"""QDQ planning and insertion: placement per target, weights/biases, onnxruntime's integer
kernels actually used, and the int8 pipeline end to end on the trained digits CNN."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxforge
from onnxforge.api import QuantizationOptions
from onnxforge.calibration.data import from_npz
from onnxforge.cli import main
from onnxforge.errors import UsageError
from onnxforge.ir import to_proto
from onnxforge.models.digits import train_digits_cnn
from onnxforge.passes.compression.int8.policy import CPU, TENSORRT
from onnxforge.passes.compression.int8.qdq import apply_qdq, plan_qdq
from onnxforge.passes.compression.int8.weights import activation_params, quantize_bias, quantize_weight


@pytest.fixture(scope="module")
def digits():
    proto, (x, y) = train_digits_cnn(0)
    return proto, x, y


def _ort_ops(model: onnx.ModelProto) -> collections.Counter:
    """Ops onnxruntime actually runs after its own optimizations (QDQ fusions included)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = f"{d}/opt.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(f"{d}/opt.onnx").graph.node)


def test_weights_are_symmetric_per_channel_and_bias_int32():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    q, p = quantize_weight(w, axis=0)
    assert q.dtype == np.int8 and p.scale.shape == (4,) and not p.zero_point.any()
    assert np.abs(q).max() == 127
    err = np.abs(q * p.scale.reshape(-1, 1, 1, 1) - w).max(axis=(1, 2, 3))
    assert np.all(err <= p.scale / 2 + 1e-7)
    b, bp = quantize_bias(np.array([0.5, -1.0, 0.0, 2.0], np.float32), 0.02, p.scale)
    assert b.dtype == np.int32 and np.allclose(b * bp.scale, [0.5, -1.0, 0.0, 2.0], atol=bp.scale.max())
    a = activation_params(-1.0, 3.0, "uint8")
    assert a.zero_point.dtype == np.uint8 and np.isclose(
        float(a.scale) * int(a.zero_point), 1.0, atol=float(a.scale)
    )
    assert activation_params(-1.0, 3.0, "int8").zero_point == 0


def test_cpu_placement_lets_onnxruntime_run_integer_kernels(digits):
    proto, x, _ = digits
    ir = onnxforge.compile(proto, "optimize").ir
    plan = plan_qdq(ir, CPU)
    assert [n.op_type for n in plan.compute] == ["Conv", "Conv", "Gemm"]
    assert set(plan.shared) == {"pool", "flat"}  # pass-through ops share their input's params
    ranges = {n: (-1.0, 6.0) for n in plan.calibrate}
    apply_qdq(ir, plan, ranges, CPU)
    q = to_proto(ir)
    onnx.checker.check_model(q)
    ops = _ort_ops(q)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 1 and "Conv" not in ops
    assert {i.name: i.type.tensor_type.elem_type for i in q.graph.input} == {
        i.name: i.type.tensor_type.elem_type for i in proto.graph.input
    }


def test_tensorrt_placement_has_no_output_qdq(digits):
    proto, _, _ = digits
    ir = onnxforge.compile(proto, "optimize").ir
    plan = plan_qdq(ir, TENSORRT)
    assert "relu1" in plan.calibrate  # conv inputs
    relu2_out_q = [n for n in plan.calibrate if n == "logits"]
    assert relu2_out_q == []
    apply_qdq(ir, plan, {n: (-1.0, 6.0) for n in plan.calibrate}, TENSORRT)
    q = to_proto(ir)
    zps = [
        t
        for t in q.graph.initializer
        if t.name.endswith("_zero_point") and not t.name.endswith(("_w_zero_point", "_b_zero_point"))
    ]
    assert zps and all(t.data_type == onnx.TensorProto.INT8 for t in zps)


def test_int8_pipeline_keeps_digits_accuracy(digits, tmp_path):
    proto, x, y = digits
    inp = proto.graph.input[0].name
    np.savez(tmp_path / "calib.npz", **{inp: x[:64]})
    result = onnxforge.compile(
        proto,
        "int8",
        quantization=QuantizationOptions(
            calibration=str(tmp_path / "calib.npz"), method="minmax", speed_guard=False
        ),
        verify=True,
    )
    rep = result.report.quantization
    assert len(rep.quantized) == 3 and min(rep.output_cosine.values()) > 0.999

    def accuracy(m: onnx.ModelProto) -> float:  # on the digits it was not calibrated on
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return float((s.run(None, {inp: x[64:]})[0].argmax(1) == y[64:]).mean())

    drop = (accuracy(proto) - accuracy(result.model)) * 100
    assert drop <= 0.3, drop
    assert any(t.data_type == onnx.TensorProto.INT8 for t in result.model.graph.initializer)
    assert result.report.to_dict()["quantization"]["layer_sqnr_db"]


def test_budget_keeps_layers_in_float(digits, tmp_path):
    proto, x, _ = digits
    inp = proto.graph.input[0].name
    source = from_npz_path = tmp_path / "c.npz"
    np.savez(from_npz_path, **{inp: x[:16]})
    result = onnxforge.compile(
        proto,
        "int8",
        quantization=QuantizationOptions(calibration=str(source), min_sqnr=200.0, speed_guard=False),
    )
    rep = result.report.quantization
    # Only float reaches 200 dB: layers go back, most sensitive first, until none is int8 (the
    # Gemm reads a range that was calibrated only through the last convolution's output, so it
    # follows that convolution), and the budget holds (a budget that cannot be met fails the
    # compile: tests/calibration/test_budget.py).
    assert rep.quantized == [] and rep.kept_float
    assert rep.kept_float == [name for name, _ in rep.sensitivity][: len(rep.kept_float)]
    assert all(v == float("inf") for v in rep.output_sqnr.values()) and not rep.budget_missed


def test_int8_needs_calibration_data_unless_synthetic(digits, tmp_path, capsys):
    proto, _, _ = digits
    with pytest.raises(UsageError, match="calibration needs sample inputs"):
        onnxforge.compile(proto, "int8")
    result = onnxforge.compile(proto, "int8", quantization=QuantizationOptions(calibration="synthetic"))
    assert result.report.quantization.synthetic
    src = tmp_path / "d.onnx"
    onnx.save(proto, src)
    code = main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "--pipeline", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "calibration" in err
    report = tmp_path / "r.json"
    code = main(
        [
            "compile",
            str(src),
            "-o",
            str(tmp_path / "o.onnx"),
            "--pipeline",
            "int8",
            "--calibration",
            "synthetic",
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 0 and json.loads(report.read_text())["quantization"]["synthetic_calibration"] is True


def test_npz_source_reads_model_inputs(digits, tmp_path):
    proto, x, _ = digits
    inp = proto.graph.input[0].name
    np.savez(tmp_path / "c.npz", **{inp: x[:5]})
    src = from_npz(tmp_path / "c.npz")
    assert len(list(src)) == 5


def test_speed_guard_times_int8_on_this_machine(digits, tmp_path):
    proto, x, _ = digits
    inp = proto.graph.input[0].name
    np.savez(tmp_path / "c.npz", **{inp: x[:8]})
    result = onnxforge.compile(
        proto, "int8", quantization=QuantizationOptions(calibration=str(tmp_path / "c.npz"))
    )
    rep = result.report.quantization
    assert rep.speedup is not None and 0 < rep.speedup < 100
    assert result.report.to_dict()["quantization"]["measured_speedup"] == round(rep.speedup, 3)


@pytest.mark.parametrize("machine", ["int8 faster", "int8 slower until a layer goes back"])
def test_speed_guard_decides_from_the_timing(machine, digits, tmp_path, monkeypatch):
    """Timing replaced, so each branch is decided: int8 twice as fast keeps all three layers and
    says nothing; int8 slower until the smallest layer is float drops exactly that one."""
    import onnxforge.passes.compression.int8.flow as static

    full = _dq_count(onnxforge.compile(digits[0], "int8", quantization=_opts(digits, tmp_path, False)).model)

    def latencies(f, q, feed):
        slow = machine != "int8 faster" and _dq_count(q) >= full
        return 1.0, 1.1 if slow else 0.5

    monkeypatch.setattr(static, "_latencies", latencies)
    rep = onnxforge.compile(digits[0], "int8", quantization=_opts(digits, tmp_path, True)).report.quantization
    assert rep.speedup == pytest.approx(2.0)
    assert not any("not faster" in n for n in rep.notes)
    if machine == "int8 faster":
        assert len(rep.quantized) == 3 and rep.kept_for_speed == []
    else:
        macs = static._layer_macs(to_proto(onnxforge.compile(digits[0], "optimize").ir), {"input": digits[1][:1]})
        smallest = min(rep.quantized + rep.kept_for_speed, key=lambda n: macs.get(n, 0))
        assert rep.kept_for_speed == [smallest] and len(rep.quantized) == 2


def _opts(digits, tmp_path, speed_guard: bool) -> QuantizationOptions:
    np.savez(tmp_path / "c.npz", **{digits[0].graph.input[0].name: digits[1][:8]})
    return QuantizationOptions(calibration=str(tmp_path / "c.npz"), speed_guard=speed_guard)


def _dq_count(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "DequantizeLinear" for n in model.graph.node)


def _conv_chain(n: int) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(n):
        inits.append(
            numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.15).astype(np.float32), f"w{i}")
        )
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


@pytest.mark.parametrize("which", ["digits", "70 convolutions"])
def test_speed_guard_returns_float_when_int8_never_pays(which, digits, tmp_path, monkeypatch):
    """Timing replaced by a machine where int8 is always 10% slower: halving the quantized layers
    never gets there, so every layer goes back to float rather than returning a slower model."""
    import onnxforge.passes.compression.int8.flow as static

    monkeypatch.setattr(static, "_latencies", lambda f, q, feed: (1.0, 1.0 if _no_q(q) else 1.1))
    if which == "digits":
        proto, x, _ = digits
        x = x[:64]
    else:
        proto = _conv_chain(70)
        x = np.random.default_rng(1).standard_normal((4, 1, 8, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "c.npz", **{proto.graph.input[0].name: x})
    result = onnxforge.compile(
        proto, "int8", quantization=QuantizationOptions(calibration=str(tmp_path / "c.npz"))
    )
    rep = result.report.quantization
    assert rep.quantized == [] and rep.kept_for_speed
    assert any("every layer kept in float" in n for n in rep.notes)
    assert _no_q(result.model)


def _no_q(model: onnx.ModelProto) -> bool:
    return not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def test_outer_weight_used_in_both_if_branches_gets_a_dequantize_in_each():
    from onnx import TensorProto, helper, numpy_helper

    from onnxforge import modelio

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "W")

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], [f"{name}_y"], name=f"{name}_mm")],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2, 64])],
        )

    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else"))],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
        [w],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    ir = modelio.load(proto).model
    plan = plan_qdq(ir, CPU)
    assert len(plan.weight_only) == 2
    result = apply_qdq(ir, plan, {}, CPU)
    assert result.weight_only == 2
    q = to_proto(ir)
    onnx.checker.check_model(q, full_check=True)
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    for c in (True, False):
        got = sess.run(None, {"c": np.array(c), "x": x})[0]
        ref = x @ numpy_helper.to_array(w)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02


def test_residual_add_is_quantized_but_add_of_a_constant_is_not():
    from onnx import TensorProto, helper

    from onnxforge.ir import from_proto

    rng = np.random.default_rng(0)

    def conv(name, inp, out):
        w = helper.make_tensor(
            f"{name}_w", TensorProto.FLOAT, [8, 8, 3, 3], rng.standard_normal(576).astype(np.float32).tolist()
        )
        return helper.make_node("Conv", [inp, f"{name}_w"], [out], name=name, pads=[1, 1, 1, 1]), w

    c1, w1 = conv("c1", "x", "a")
    c2, w2 = conv("c2", "a", "b")
    c3, w3 = conv("c3", "s", "y")
    nodes = [
        c1,
        c2,
        helper.make_node("Add", ["a", "b"], ["r"], name="residual"),
        helper.make_node("Add", ["r", "three"], ["s"], name="shift"),
        c3,
    ]
    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w1, w2, w3, three],
    )
    ir = from_proto(
        onnx.shape_inference.infer_shapes(
            helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        )
    )
    plan = plan_qdq(ir, CPU)
    assert "r" in plan.calibrate  # the residual join runs as QLinearAdd between QLinearConvs
    assert "s" in plan.calibrate  # c3's input
    apply_qdq(ir, plan, {n: (-1.0, 6.0) for n in plan.calibrate}, CPU)
    ops = _ort_ops(to_proto(ir))
    # c1, c2 and the residual join run on integers; the constant shift runs in float between
    # a DQ and c3's input Q (c3 itself writes the float model output)
    assert ops["QLinearConv"] == 2 and ops["QLinearAdd"] == 1 and ops["Add"] == 1


@pytest.mark.parametrize("shape, fused", [([8, 64], True), ([1, 8, 64], True), (["batch", 8, 64], False)])
def test_matmul_bias_add_gets_an_int32_bias_where_onnxruntime_makes_a_gemm(shape, fused):
    """onnxruntime merges MatMul + bias Add into Gemm when it can reshape the input to 2-D; a float
    bias then keeps that Gemm in float with its weight dequantized at every call."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxforge.ir import from_proto

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "b"], ["y"], name="bias"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], 32])],
        [w, b],
    )
    proto = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    ir = from_proto(proto)
    plan = plan_qdq(ir, CPU)
    result = apply_qdq(ir, plan, {"x": (-3.0, 3.0)}, CPU)
    q = to_proto(ir)
    producers = {o: n for n in q.graph.node for o in n.output}
    add = next(n for n in q.graph.node if n.op_type == "Add")
    bias = producers.get(add.input[1])
    assert (bias is not None and bias.op_type == "DequantizeLinear") == fused
    assert result.biases == int(fused)
    if fused:
        assert _ort_ops(q)["QGemm"] == 1  # integer Gemm, no float Gemm left
    x = rng.standard_normal([d if isinstance(d, int) else 2 for d in shape]).astype(np.float32)
    ref = x @ numpy_helper.to_array(w) + numpy_helper.to_array(b)
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02


def test_pair_limit_widens_only_the_channels_whose_neighbouring_codes_could_overflow_int16():
    from onnxforge.passes.compression.int8.weights import quantize_weight

    rng = np.random.default_rng(0)
    w = rng.standard_normal((9, 4)).astype(np.float32) * 0.1  # MatMul [K, N]: channels on axis 1, K odd
    w[::2, [0, 2, 3]] = 0.0  # every pair of these channels holds one code at most: nothing to widen
    w[2, 1], w[3, 1] = 1.0, -1.0  # channel 1: a pair at +-127 sums to 254
    plain, p8 = quantize_weight(w, 1)
    q, p = quantize_weight(w, 1, pair_limit=128)
    pairs = np.abs(np.pad(q.astype(np.int32), ((0, 1), (0, 0)))).reshape(5, 2, 4).sum(axis=1)
    assert pairs.max() <= 128
    assert p.scale[1] > p8.scale[1] * 1.9
    keep = [0, 2, 3]
    np.testing.assert_array_equal(p.scale[keep], p8.scale[keep])
    np.testing.assert_array_equal(q[:, keep], plain[:, keep])


def test_u8s8_saturation_detection_can_be_overridden(monkeypatch):
    from onnxforge.runtime import machine

    monkeypatch.setenv("ONNXFORGE_INT8_REDUCE_RANGE", "1")
    assert machine.u8s8_saturates()
    monkeypatch.setenv("ONNXFORGE_INT8_REDUCE_RANGE", "0")
    assert not machine.u8s8_saturates()
    monkeypatch.delenv("ONNXFORGE_INT8_REDUCE_RANGE")
    flags = machine.cpu_flags()
    if flags and "avx512_vnni" in flags:
        assert not machine.u8s8_saturates()
