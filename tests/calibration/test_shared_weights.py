"""Variant sessions that take the base model's large weights by reference compute exactly what
sessions over the full protos compute."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.calibration.shared_weights import SharedWeightSessions
from onnxforge.equivalence import OrtRunner


def _mlp(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_variants_share_identical_weights_and_keep_their_own():
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((256, 256)).astype(np.float32) for _ in range(2))  # 256 KiB each
    base = _mlp(w1, w2)
    variant = _mlp(w1, w2 * 0.5)  # W1 identical (shared), W2 changed (sent in the proto)
    # an identical initializer nothing reads: onnxruntime drops it at load, so it is not shared
    for m in (base, variant):
        m.graph.initializer.append(numpy_helper.from_array(w1, "unread"))
    before = variant.SerializeToString()
    sessions = SharedWeightSessions(base)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    for model, shared in ((base, ["W1", "W2"]), (variant, ["W1"])):
        got = sessions.session(model).run(None, {"x": x})[0]
        assert sessions.last_shared == shared
        np.testing.assert_array_equal(got, OrtRunner().run(model, {"x": x})["y"])
    assert variant.SerializeToString() == before
