"""Common-subexpression elimination."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import apply, const, make_model, op_counts, ops, subgraph, vi

from onnxforge.passes import CommonSubexpressionElimination as CSE


def _run_twice(m, **kw):
    a = apply(m, CSE(), **kw)
    assert CSE()(a.model).modified is False, "a second run must find nothing left to do"
    return a


def test_duplicate_chains_collapse_in_one_run():
    nodes = [
        helper.make_node("Relu", ["x"], ["r1"]),
        helper.make_node("Relu", ["x"], ["r2"]),
        helper.make_node("Mul", ["r1", "w"], ["m1"]),
        helper.make_node("Mul", ["r2", "w"], ["m2"]),
        helper.make_node("Sub", ["m1", "m2"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])], [const("w", [1.0, 2.0, 3.0])])
    a = _run_twice(m)
    assert a.result.modified is True
    assert ops(a.after) == ["Relu", "Mul", "Sub"]
    sub = a.after.graph.node[-1]
    assert sub.input[0] == sub.input[1]
    assert a.stats == {"merged_nodes": 2, "merged_constants": 0}


def test_different_attributes_or_input_order_do_not_merge():
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.1),
        helper.make_node("LeakyRelu", ["x"], ["b"], alpha=0.2),
        helper.make_node("Sub", ["a", "b"], ["c"]),
        helper.make_node("Sub", ["b", "a"], ["d"]),
        helper.make_node("Concat", ["c", "d"], ["y"], axis=0),
    ]
    m = make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[6])])
    a = apply(m, CSE())
    assert a.result.modified is False
    assert a.stats["merged_nodes"] == 0


def test_identical_constants_merge_and_the_graph_output_keeps_its_name():
    t = numpy_helper.from_array(np.array([1.0, 2.0], np.float32))
    nodes = [
        helper.make_node("Constant", [], ["c1"], value=t),
        helper.make_node("Constant", [], ["c2"], value=t),
        helper.make_node("Constant", [], ["c3"], value_floats=[1.0, 2.0]),  # other spelling: kept
        helper.make_node("Add", ["x", "c1"], ["a"]),
        helper.make_node("Add", ["a", "c3"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2]), vi("c2", shape=[2])])
    a = _run_twice(m)
    assert op_counts(a.after) == {"Constant": 2, "Add": 2}
    assert a.stats == {"merged_nodes": 1, "merged_constants": 1}
    assert [o.name for o in a.after.graph.output] == ["y", "c2"]


def test_constants_merge_in_ir_version_3():
    t = numpy_helper.from_array(np.array(3.0, np.float32))
    nodes = [
        helper.make_node("Constant", [], ["k1"], value=t),
        helper.make_node("Constant", [], ["k2"], value=t),
        helper.make_node("Mul", ["x", "k1"], ["a"]),
        helper.make_node("Mul", ["a", "k2"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])], ir_version=3, opset=8)
    a = _run_twice(m)
    assert op_counts(a.after) == {"Constant": 1, "Mul": 2}


def test_duplicates_that_are_both_graph_outputs():
    nodes = [helper.make_node("Neg", ["x"], ["y1"]), helper.make_node("Neg", ["x"], ["y2"])]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y1", shape=[2]), vi("y2", shape=[2])])
    a = _run_twice(m)
    assert ops(a.after) == ["Neg", "Identity"]  # the Identity keeps y2 distinct from y1
    assert [o.name for o in a.after.graph.output] == ["y1", "y2"]


def test_identities_keeping_outputs_distinct_are_not_merged():
    nodes = [helper.make_node("Identity", ["x"], ["y1"]), helper.make_node("Identity", ["x"], ["y2"])]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y1", shape=[2]), vi("y2", shape=[2])])
    a = apply(m, CSE())
    assert a.result.modified is False


def test_random_ops_and_training_dropout_are_never_merged():
    nodes = [
        helper.make_node("RandomUniformLike", ["x"], ["r1"], seed=1.0),
        helper.make_node("RandomUniformLike", ["x"], ["r2"], seed=1.0),
        helper.make_node("Dropout", ["x", "ratio", "train"], ["d1"], seed=3),
        helper.make_node("Dropout", ["x", "ratio", "train"], ["d2"], seed=3),
        helper.make_node("Concat", ["r1", "r2", "d1", "d2"], ["y"], axis=0),
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[3])],
        [vi("y", shape=[12])],
        [const("ratio", 0.5), const("train", True, np.bool_)],
    )
    a = apply(m, CSE(), equivalent=False)  # random outputs
    assert a.result.modified is False


def test_inference_dropout_merges():
    nodes = [
        helper.make_node("Dropout", ["x"], ["d1"]),
        helper.make_node("Dropout", ["x"], ["d2"]),
        helper.make_node("Add", ["d1", "d2"], ["y"]),
    ]
    a = _run_twice(make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])]))
    assert op_counts(a.after) == {"Dropout": 1, "Add": 1}


def test_trailing_omitted_inputs_do_not_matter():
    nodes = [
        helper.make_node("Clip", ["x", "lo"], ["a"]),
        helper.make_node("Clip", ["x", "lo", ""], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])], [const("lo", 0.0)])
    a = _run_twice(m)
    assert op_counts(a.after) == {"Clip": 1, "Add": 1}


def _branches(sfx: str):
    then_g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], [f"t1{sfx}"]),
            helper.make_node("Relu", ["x"], [f"t2{sfx}"]),
            helper.make_node("Add", [f"t1{sfx}", f"t2{sfx}"], [f"t_out{sfx}"]),
        ],
        "then",
        [],
        [vi(f"t_out{sfx}", shape=[3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], [f"e_out{sfx}"])], "else", [], [vi(f"e_out{sfx}", shape=[3])]
    )
    return {"then_branch": then_g, "else_branch": else_g}


def test_each_graph_is_its_own_scope():
    """Relu(x) in the main graph, twice in each then branch and once in each else branch (all
    reading x through a capture); two identical Ifs, which own subgraphs and are never merged."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("If", ["c"], ["z"], **_branches("")),
        helper.make_node("If", ["c"], ["z2"], **_branches("_b")),
        helper.make_node("Sum", ["r", "z", "z2"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])
    for c in (True, False):
        a = _run_twice(m, feeds={"x": np.array([1, -2, 3], np.float32), "c": np.array(c)})
        assert ops(a.after) == ["Relu", "If", "If", "Sum"]
        assert ops(subgraph(a.after, "If", "then_branch")) == ["Relu", "Add"]  # merged inside only
        assert ops(subgraph(a.after, "If", "else_branch")) == ["Relu"]  # not merged with the outer Relu
        assert a.stats["merged_nodes"] == 2  # one per then branch
