"""int8 inside If branches: the branch the calibration data runs is quantized like the main
graph, the other one weight-only, and the result loads in onnxruntime at every level."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from calib_models import ListReader
from onnx import TensorProto, helper, numpy_helper

import onnxforge
from onnxforge.api import QuantizationOptions
from onnxforge.equivalence import OrtRunner
from onnxforge.metrics.sqnr import cosine

RNG = np.random.default_rng(0)


def _conv(
    name: str, inp: str, out: str, cin: int = 8, cout: int = 8
) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    w = numpy_helper.from_array(
        (RNG.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32), f"{name}_w"
    )
    return helper.make_node("Conv", [inp, f"{name}_w"], [out], name=name, pads=[1, 1, 1, 1]), w


def _branch(name: str, inp: str) -> onnx.GraphProto:
    c1, w1 = _conv(f"{name}_c1", inp, f"{name}_a")
    c2, w2 = _conv(f"{name}_c2", f"{name}_r", f"{name}_y")
    return helper.make_graph(
        [c1, helper.make_node("Relu", [f"{name}_a"], [f"{name}_r"]), c2],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w1, w2],
    )


def _model(captured: str = "h") -> onnx.ModelProto:
    """h = relu(conv(x)); t = Transpose(h) (identity permutation of batch/channel when captured
    is 't'); y = If(c) then two convs of ``captured`` else two other convs of it."""
    c0, w0 = _conv("stem", "x", "h0")
    nodes = [
        c0,
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("Transpose", ["h"], ["t"], perm=[0, 1, 3, 2]),
    ]
    nodes.append(
        helper.make_node(
            "If", ["c"], ["y"], then_branch=_branch("then", captured), else_branch=_branch("else", captured)
        )
    )
    g = helper.make_graph(
        nodes,
        "main",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w0],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds(n: int, c: bool, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32), "c": np.array(c)} for _ in range(n)]


def _compile(model: onnx.ModelProto, calib, tmp_path):
    from onnxforge.calibration.data import from_reader

    src = tmp_path / "src.onnx"
    onnx.save(model, src)
    result = onnxforge.compile(
        src,
        "int8",
        quantization=QuantizationOptions(calibration=from_reader(ListReader(calib)), speed_guard=False),
    )
    return result, result.save(tmp_path / "int8.onnx")


def _ops(g: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _branches(q: onnx.ModelProto) -> dict[str, onnx.GraphProto]:
    node = next(n for n in q.graph.node if n.op_type == "If")
    return {a.name: a.g for a in node.attribute}


def test_the_calibrated_branch_is_quantized_and_the_other_weight_only(tmp_path):
    model = _model()
    result, out = _compile(model, _feeds(8, True), tmp_path)
    report = result.report.quantization
    assert {"then_c1", "then_c2", "stem"} <= set(report.quantized)
    # else_c2's input exists only when the else branch runs: weight-only (else_c1 reads the
    # calibrated main-graph tensor h, so its input is quantized either way)
    assert report.weight_only == ["else_c2"]
    assert any("never computed their inputs" in n for n in report.notes)
    q = onnx.load(out)
    branches = _branches(q)
    then_ops, else_ops = _ops(branches["then_branch"]), _ops(branches["else_branch"])
    assert then_ops.get("QuantizeLinear", 0) >= 1  # activations quantized inside the branch
    assert else_ops.get("QuantizeLinear", 0) == 0  # nothing calibrated in there
    runner = OrtRunner()
    for c in (True, False):
        feed = _feeds(1, c, seed=7)[0]
        ref, got = runner.run(model, feed)["y"], runner.run(str(out), feed)["y"]
        assert cosine(ref, got) > 0.995, c


_LOAD = """
import sys, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
"""


def test_dequantized_data_movement_read_inside_a_branch_does_not_crash_onnxruntime(tmp_path):
    """DQ -> Transpose whose output an If branch reads: onnxruntime's QDQ propagation aborts the
    process on that shape of graph, so the Transpose keeps reading the float tensor."""
    model = _model(captured="t")
    _, out = _compile(model, _feeds(8, True), tmp_path)
    q = onnx.load(out)
    transpose = next(n for n in q.graph.node if n.op_type == "Transpose")
    producer = {o: n for n in q.graph.node for o in n.output}.get(transpose.input[0])
    assert producer is None or producer.op_type != "DequantizeLinear"
    # in a child process: the failure mode is an abort, not an exception
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-500:]
