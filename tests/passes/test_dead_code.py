"""Dead-code elimination."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from pass_helpers import apply, const, make_model, op_counts, ops, subgraph, vi

from onnxforge import modelio
from onnxforge.ir import verify
from onnxforge.passes import DeadCodeElimination


def _dead_branch_model():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Neg", ["x"], ["n"], name="dead_neg"),
        helper.make_node("Abs", ["n"], ["a"], name="dead_abs"),
        helper.make_node("Add", ["a", "w_dead"], ["s"], name="dead_add"),
        helper.make_node("Mul", ["r", "w"], ["y"], name="mul"),
    ]
    return make_model(
        nodes,
        [vi("x", shape=[2, 3])],
        [vi("y", shape=[2, 3])],
        [const("w", np.full(3, 2.0)), const("w_dead", np.ones(3)), const("w_unused", np.ones(100))],
        value_info=[vi("ghost", shape=[1]), vi("n", shape=[2, 3])],
    )


def test_removes_dead_chain_unused_initializers_and_stale_value_info():
    a = apply(_dead_branch_model(), DeadCodeElimination())
    assert a.result.modified is True
    assert ops(a.after) == ["Relu", "Mul"]
    assert a.stats["removed_nodes"] == 3
    assert a.stats["removed_initializers"] == 2
    assert a.stats["removed_initializer_bytes"] == 3 * 4 + 100 * 4
    assert a.stats["removed_value_info"] == 1  # "ghost" names nothing
    assert {t.name for t in a.after.graph.initializer} == {"w"}
    assert not any(v.name in ("ghost", "n") for v in a.after.graph.value_info)


def test_second_run_changes_nothing():
    loaded = modelio.load(_dead_branch_model())
    assert DeadCodeElimination()(loaded.model).modified is True
    version = loaded.model.version
    again = DeadCodeElimination()(loaded.model)
    assert again.modified is False
    assert loaded.model.version == version


def test_live_model_is_untouched():
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", shape=[2])], [vi("y", shape=[2])])
    a = apply(m, DeadCodeElimination())
    assert a.result.modified is False
    assert a.stats["removed_nodes"] == 0


def test_graph_output_keeps_its_producer_and_multi_output_node_with_one_used_output():
    nodes = [
        helper.make_node("Split", ["x"], ["p", "q"], axis=0, num_outputs=2),
        helper.make_node("Neg", ["q"], ["unused"]),
        helper.make_node("Relu", ["p"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[4])], [vi("y", shape=[2])], opset=18)
    a = apply(m, DeadCodeElimination())
    assert ops(a.after) == ["Split", "Relu"]
    assert a.stats["removed_nodes"] == 1


def test_initializer_that_is_a_graph_input_is_never_removed():
    # IR version 3: every initializer is also a graph input (an overridable default).
    m = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", shape=[2]), vi("d", shape=[2])],
        [vi("y", shape=[2])],
        [const("d", [1.0, 2.0])],
        ir_version=3,
        opset=8,
    )
    a = apply(m, DeadCodeElimination())
    assert a.result.modified is False
    assert [t.name for t in a.after.graph.initializer] == ["d"]
    assert [i.name for i in a.after.graph.input] == ["x", "d"]


def test_custom_domain_node_without_outputs_is_kept():
    nodes = [
        helper.make_node("Log", ["x"], [], domain="my.custom"),  # zero outputs: maybe a side effect
        helper.make_node("Probe", ["x"], ["unused"], domain="my.custom"),  # outputs unused: dead
        helper.make_node("Relu", ["x"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])], domains=[("my.custom", 1)])
    a = apply(m, DeadCodeElimination(), equivalent=False)  # onnxruntime cannot run custom ops
    assert ops(a.after) == ["Log", "Relu"]
    assert a.stats["removed_nodes"] == 1


def _if_model(if_used: bool):
    """s = x * 2 is read only inside the If branches; the then branch has a dead node."""
    then_g = helper.make_graph(
        [
            helper.make_node("Add", ["s", "s"], ["t_out"], name="then_add"),
            helper.make_node("Neg", ["s"], ["t_dead"], name="then_dead"),
        ],
        "then",
        [],
        [vi("t_out", shape=[3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["s", "x"], ["e_out"], name="else_sub")], "else", [], [vi("e_out", shape=[3])]
    )
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["s"], name="mul"),
        helper.make_node("If", ["c"], ["z"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["z" if if_used else "x"], ["y"], name="relu"),
    ]
    return make_model(
        nodes,
        [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])],
        [vi("y", shape=[3])],
        [const("two", 2.0)],
    )


def test_value_captured_by_a_live_subgraph_stays_and_dead_subgraph_nodes_go():
    m = _if_model(if_used=True)
    for c in (True, False):
        a = apply(m, DeadCodeElimination(), feeds={"x": np.array([1, -2, 3], np.float32), "c": np.array(c)})
        assert ops(a.after) == ["Mul", "If", "Relu"]
        assert ops(subgraph(a.after, "If", "then_branch")) == ["Add"]  # then_dead removed
        assert ops(subgraph(a.after, "If", "else_branch")) == ["Sub"]
        assert a.stats["removed_nodes"] == 1


def test_dead_if_takes_its_captures_with_it_and_detaches_their_uses():
    loaded = modelio.load(_if_model(if_used=False))
    model = loaded.model
    x = model.graph.inputs[0]
    assert {n.name for n, _ in x.uses()} == {"mul", "else_sub", "relu"}
    r = DeadCodeElimination()(model)
    verify(model)
    assert r.modified is True
    assert [n.op_type for n in model.graph] == ["Relu"]
    # 3 nodes in the main graph (Mul, If) + 3 inside the branches; the capture of x by the
    # removed else branch no longer counts as a use.
    assert r.stats["removed_nodes"] == 2 + 3
    assert {n.name for n, _ in x.uses()} == {"relu"}
    assert r.stats["removed_initializers"] == 1  # "two" was only read by the dead Mul
    assert DeadCodeElimination()(model).modified is False


def test_dead_if_numerically():
    m = _if_model(if_used=False)
    a = apply(m, DeadCodeElimination(), feeds={"x": np.array([1, -2, 3], np.float32), "c": np.array(True)})
    assert op_counts(a.after) == {"Relu": 1}
    assert not a.after.graph.initializer
