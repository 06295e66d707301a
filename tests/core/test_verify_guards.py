"""--verify refuses, in one line, a model onnxruntime would never finish: found by the fuzzer
(a Loop's trip count set to 2**63 - 1 made onnxruntime abort the whole process)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.equivalence import MAX_LOOP_TRIPS, assert_equivalent, refuse_unbounded_loops
from onnxforge.errors import VerificationError


def _loop(trips: int, with_condition: bool):  # type: ignore[no-untyped-def]
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "one"], ["acc_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])],
    )
    inits = [numpy_helper.from_array(np.array(trips, np.int64), "trip"), numpy_helper.from_array(np.ones(1, np.float32), "one")]
    if with_condition:
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
    loop = helper.make_node("Loop", ["trip", "cond" if with_condition else "", "x"], ["y"], name="loop", body=body)
    g = helper.make_graph(
        [loop], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_loop_only_its_trip_count_can_stop_is_refused_when_huge():
    huge = _loop(2**63 - 1, with_condition=False)
    with pytest.raises(VerificationError, match=r"Loop 'loop' runs 9223372036854775807 iterations"):
        assert_equivalent(huge, huge)


def test_small_or_conditioned_loops_are_run():
    small = _loop(5, with_condition=False)
    assert assert_equivalent(small, small)["y"][0] != 0
    refuse_unbounded_loops(_loop(MAX_LOOP_TRIPS + 1, with_condition=True))  # a condition may stop it
