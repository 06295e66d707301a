"""Layer sensitivity: each candidate's model is run once per sample, every output compared, and
the worst output SQNR ranks it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.ir import from_proto
from onnxforge.metrics.sqnr import sqnr_db
from onnxforge.passes.compression.int8.flow import sensitivity_ranking


def _two_outputs(noise1: float = 0.0, noise2: float = 0.0):
    """y1 = x + noise1 * n, y2 = 2x + noise2 * n (n a fixed pattern)."""
    n = numpy_helper.from_array(np.sin(np.arange(16, dtype=np.float32)).reshape(1, 16), "n")
    k1 = numpy_helper.from_array(np.array(noise1, np.float32), "k1")
    k2 = numpy_helper.from_array(np.array(noise2, np.float32), "k2")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["n", "k1"], ["e1"]),
        helper.make_node("Add", ["x", "e1"], ["y1"]),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Mul", ["n", "k2"], ["e2"]),
        helper.make_node("Add", ["x2", "e2"], ["y2"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 16]) for o in ("y1", "y2")],
        [n, k1, k2, two],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_ranking_takes_the_worst_output_of_each_layer():
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(3)]
    builds = {"small": _two_outputs(noise1=0.01), "big_on_second": _two_outputs(noise2=0.5), "none": _two_outputs()}
    calls: list[str] = []

    def build_only(layer):
        calls.append(layer)
        return from_proto(builds[layer])

    ranking = sensitivity_ranking(_two_outputs(), list(builds), samples, None, build_only)
    assert [name for name, _ in ranking] == ["big_on_second", "small", "none"]
    assert calls == list(builds)  # one build per layer
    x = np.concatenate([s["x"] for s in samples])
    pattern = np.tile(np.sin(np.arange(16, dtype=np.float32)), (3, 1))
    expected = sqnr_db(2 * x, 2 * x + 0.5 * pattern)  # the second output is the worse one
    assert dict(ranking)["big_on_second"] == pytest.approx(expected, abs=1e-3)
    assert math.isinf(dict(ranking)["none"])


def test_a_layer_that_makes_outputs_non_finite_ranks_first():
    """Inf noise (k1 = inf) makes the first output non-finite: no SQNR at all, so that layer is
    the most sensitive, ahead of any finite SQNR, wherever it sits in the list."""
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(2)]
    builds = {"noisy": _two_outputs(noise2=0.5), "broken": _two_outputs(noise1=np.inf), "none": _two_outputs()}
    for order in (list(builds), list(reversed(builds))):
        ranking = sensitivity_ranking(_two_outputs(), order, samples, None, lambda layer: from_proto(builds[layer]))
        assert [name for name, _ in ranking] == ["broken", "noisy", "none"]
        assert math.isnan(dict(ranking)["broken"])
