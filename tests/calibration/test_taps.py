"""Tensors inside If branches are threaded out to main-graph outputs; Loop bodies are not."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.calibration.taps import tapped_model
from onnxforge.equivalence import OrtRunner


def _nested_if_and_loop() -> onnx.ModelProto:
    """y = If(a) then (If(b) then relu(x)*3 [``deep``] else x+1 [``inner_else``]) else -x [``neg``];
    z = Loop(2) body: acc + x [``acc_out``]."""
    deep_then = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "three"], ["deep"])],
        "deep_then",
        [],
        [helper.make_tensor_value_info("deep", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(3.0, np.float32), "three")],
    )
    deep_else = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["inner_else"])],
        "deep_else",
        [],
        [helper.make_tensor_value_info("inner_else", TensorProto.FLOAT, [3])],
    )
    outer_then = helper.make_graph(
        [helper.make_node("If", ["b"], ["inner"], then_branch=deep_then, else_branch=deep_else)],
        "outer_then",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [3])],
    )
    outer_else = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["neg"])],
        "outer_else",
        [],
        [helper.make_tensor_value_info("neg", TensorProto.FLOAT, [3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "x"], ["acc_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3]),
        ],
    )
    g = helper.make_graph(
        [
            helper.make_node("If", ["a"], ["y"], then_branch=outer_then, else_branch=outer_else),
            helper.make_node("Loop", ["trips", "", "x"], ["z"], body=body),
        ],
        "main",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("a", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [3]),
        ],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(2, np.int64), "trips"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_taps_reach_through_nested_ifs_and_hold_nothing_when_the_branch_did_not_run() -> None:
    model = _nested_if_and_loop()
    before = model.SerializeToString()
    names = ["y", "deep", "r", "inner_else", "neg", "acc_out", "x"]
    tapped, taps = tapped_model(model, names)
    assert model.SerializeToString() == before
    assert set(taps) == {"y", "deep", "r", "inner_else", "neg", "x"}  # acc_out is in a Loop body
    assert taps["y"] == "y" and taps["x"] == "x" and taps["deep"] != "deep"
    assert [o.name for o in tapped.graph.output] == [taps[n] for n in names if n in taps]
    sess = OrtRunner().session(tapped)
    x = np.array([-1.0, 2.0, 0.5], np.float32)
    order = [o.name for o in tapped.graph.output]

    def run(a: bool, b: bool) -> dict[str, np.ndarray]:
        got = sess.run(order, {"x": x, "a": np.array(a), "b": np.array(b)})
        back = {v: k for k, v in taps.items()}
        return {back[o]: v for o, v in zip(order, got)}

    tt = run(True, True)
    np.testing.assert_array_equal(tt["deep"], np.maximum(x, 0) * 3)
    np.testing.assert_array_equal(tt["r"], np.maximum(x, 0))
    np.testing.assert_array_equal(tt["y"], tt["deep"])
    assert tt["inner_else"].size == 0 and tt["neg"].size == 0
    tf = run(True, False)
    np.testing.assert_array_equal(tf["inner_else"], x + 1)
    assert tf["deep"].size == 0 and tf["neg"].size == 0
    f = run(False, True)
    np.testing.assert_array_equal(f["neg"], -x)
    assert f["deep"].size == 0 and f["inner_else"].size == 0


def test_a_branch_output_is_tapped_under_a_name_of_its_own() -> None:
    model = _nested_if_and_loop()
    tapped, taps = tapped_model(model, ["neg", "deep"])  # both are branch outputs already
    got = (
        OrtRunner()
        .session(tapped)
        .run([taps["neg"]], {"x": np.ones(3, np.float32), "a": np.array(False), "b": np.array(True)})
    )
    np.testing.assert_array_equal(got[0], -np.ones(3, np.float32))
