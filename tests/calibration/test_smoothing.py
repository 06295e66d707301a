"""SmoothQuant-style smoothing keeps the float function and moves outliers into the weights."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import to_proto
from onnxforge.passes.compression.int8.smoothing import smooth_activations


def test_smoothing_is_exact_in_float_and_flattens_activation_outliers():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W2")
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("MatMul", ["h", "W1"], ["a"]),
        helper.make_node("MatMul", ["h", "W2"], ["b"]),
        helper.make_node("Add", ["h", "h"], ["res"]),  # a residual reader that must keep h
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
            for n, s in (("a", [4, 16]), ("b", [4, 8]), ("res", [4, 16]))
        ],
        [w1, w2],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [4, 16])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = modelio.load(proto).model
    x = rng.standard_normal((4, 16)).astype(np.float32)
    x[:, 3] *= 50  # an outlier channel
    assert smooth_activations(model, [{"x": x}], alpha=0.7) == 1
    after = to_proto(model)
    assert sum(n.op_type == "Mul" for n in after.graph.node) == 1
    ref = OrtRunner().run(proto, {"x": x})
    got = OrtRunner().run(after, {"x": x})
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-4)
    smoothed_input = next(n for n in after.graph.node if n.op_type == "Mul").output[0]
    # the smoothed activation's channel maxima are flatter than the original's
    from onnxforge.calibration.collect import exposed_model

    h = OrtRunner().run(exposed_model(after, ["h", smoothed_input]), {"x": x})
    spread = lambda a: np.abs(a).max(0).max() / max(np.abs(a).max(0).mean(), 1e-9)  # noqa: E731
    assert spread(h[smoothed_input]) < spread(h["h"])


def test_int8_output_carries_value_info_only_when_the_source_did(tmp_path):
    """Exported shapes let onnxruntime fuse into kernels that are slower on CPU (MiniLM-L6 lost a
    fifth of its int8 speed-up to SkipLayerNormalization): smoothing must not turn them on."""
    from onnxforge.cli import main

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"W{i}") for i in range(2)
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W1"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])],
        inits,
    )
    src = tmp_path / "mlp.onnx"
    onnx_model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    import onnx

    onnx.save(onnx_model, src)
    x = rng.standard_normal((16, 8, 64)).astype(np.float32)
    x[..., 5] *= 30  # an outlier channel, so smoothing has work to do
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "int8.onnx"
    args = [
        "compile",
        str(src),
        "-o",
        str(out),
        "--pipeline",
        "int8",
        "--calibration",
        str(tmp_path / "calib.npz"),
        "-q",
    ]
    assert main([*args, "--no-speed-guard"]) == 0
    q = onnx.load(out)
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)
    assert len(q.graph.value_info) == 0
