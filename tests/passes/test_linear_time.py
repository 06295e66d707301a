"""Every cleanup pass is linear: a 20,000-node model takes a fraction of a second each."""

from __future__ import annotations

import time

from onnx import helper
from pass_helpers import make_model, vi

from onnxforge import modelio
from onnxforge.ir import verify
from onnxforge.passes import (
    CommonSubexpressionElimination,
    DeadCodeElimination,
    DeduplicateInitializers,
    NoOpElimination,
    NormalizeConstants,
    ShapeInference,
    TopologicalSort,
)

NODES = 20_000
#: Generous per-pass budget: a quadratic pass on 20k nodes would take minutes.
BUDGET_S = 2.0


def _chain_model():
    """Blocks of 7 nodes with work for every pass: a Constant (normalize, then dedup), an
    Identity (no-op), a dead Neg (DCE), and duplicate Relus (CSE)."""
    nodes = []
    t = "x"
    for i in range(NODES // 7):
        nodes += [
            helper.make_node("Constant", [], [f"c{i}"], value_float=1.5),
            helper.make_node("Mul", [t, f"c{i}"], [f"m{i}"]),
            helper.make_node("Identity", [f"m{i}"], [f"d{i}"]),
            helper.make_node("Neg", [f"d{i}"], [f"dead{i}"]),
            helper.make_node("Relu", [f"d{i}"], [f"r{i}a"]),
            helper.make_node("Relu", [f"d{i}"], [f"r{i}b"]),
            helper.make_node("Add", [f"r{i}a", f"r{i}b"], [f"t{i}"]),
        ]
        t = f"t{i}"
    nodes.append(helper.make_node("Identity", [t], ["y"]))
    return make_model(nodes, [vi("x", shape=[4])], [vi("y", shape=[4])])


def test_each_pass_is_linear_on_a_20k_node_chain():
    blocks = NODES // 7
    model = modelio.load(_chain_model()).model
    expected = [
        (NormalizeConstants(), "converted_constants", blocks),
        (NoOpElimination(), "removed_identity", blocks + 1),  # the last one renames t{last} to y
        (DeduplicateInitializers(), "removed_initializers", blocks - 1),
        (CommonSubexpressionElimination(), "merged_nodes", blocks),
        (DeadCodeElimination(), "removed_nodes", blocks),
        (TopologicalSort(), "reordered_graphs", 0),
        (ShapeInference(), "updated_types", 3 * blocks - 1),  # every value but y
    ]
    timings = {}
    for p, stat, value in expected:
        start = time.perf_counter()
        result = p(model)
        timings[p.name] = time.perf_counter() - start
        assert result.stats[stat] == value, (p.name, result.stats)
    verify(model)
    assert len(model.graph) == 3 * blocks  # Mul, Relu, Add per block (the last Add became y)
    slow = {name: round(s, 2) for name, s in timings.items() if s > BUDGET_S}
    assert not slow, f"passes too slow on {NODES} nodes: {slow} (all: {timings})"
