"""Topological sorting."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from pass_helpers import make_model, ops, subgraph, vi

from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.ir import replace_all_uses_with, to_proto, verify
from onnxforge.passes import TopologicalSort
from onnxforge.passes.cleanup.toposort import topological_order


def _chain():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["y"], name="neg"),
    ]
    return make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])])


def _unsort(model):
    """Insert an Abs between Relu and Neg, appended at the end of the graph (out of order)."""
    g = model.graph
    relu, neg = g.nodes
    ab = g.add_node("Abs", [relu.output(0)], name="abs")
    neg.set_input(0, ab.output(0))
    assert not g.is_topologically_sorted()


def test_out_of_order_graph_is_sorted_once():
    proto = _chain()
    model = modelio.load(proto).model
    _unsort(model)
    r = TopologicalSort()(model)
    verify(model)
    assert r.modified is True and r.stats == {"reordered_graphs": 1}
    assert [n.name for n in model.graph] == ["relu", "abs", "neg"]
    again = TopologicalSort()(model)
    assert again.modified is False and again.stats == {"reordered_graphs": 0}
    after = to_proto(model)
    assert ops(after) == ["Relu", "Abs", "Neg"]
    assert_equivalent(proto, after, feeds={"x": np.array([-1, 2, -3], np.float32)})


def test_sorted_graph_is_untouched():
    model = modelio.load(_chain()).model
    r = TopologicalSort()(model)
    assert r.modified is False
    assert model.version == 0


def test_subgraph_is_sorted_too():
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t1"], name="t_relu"), helper.make_node("Neg", ["t1"], ["t_out"], name="t_neg")],
        "then",
        [],
        [vi("t_out", shape=[3])],
    )
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [], [vi("e_out", shape=[3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    proto = make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])
    model = modelio.load(proto).model
    branch = next(iter(model.graph)).subgraphs["then_branch"]
    relu, neg = branch.nodes
    ab = branch.add_node("Abs", [relu.output(0)], name="t_abs")
    neg.set_input(0, ab.output(0))
    r = TopologicalSort()(model)
    assert r.stats == {"reordered_graphs": 1}
    assert [n.name for n in branch] == ["t_relu", "t_abs", "t_neg"]
    after = to_proto(model)
    assert ops(subgraph(after, "If", "then_branch")) == ["Relu", "Abs", "Neg"]
    for c in (True, False):
        assert_equivalent(proto, after, feeds={"x": np.array([-1, 2, -3], np.float32), "c": np.array(c)})


def test_order_respects_subgraph_captures():
    """A node whose subgraph reads a value must come after that value's producer."""
    then_g = helper.make_graph([helper.make_node("Neg", ["s"], ["t_out"])], "then", [], [vi("t_out", shape=[3])])
    else_g = helper.make_graph([helper.make_node("Abs", ["s"], ["e_out"])], "else", [], [vi("e_out", shape=[3])])
    nodes = [
        helper.make_node("Relu", ["x"], ["s"], name="producer"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    proto = make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])
    model = modelio.load(proto).model
    g = model.graph
    producer, if_node = g.nodes
    # Re-create the producer at the end of the graph: only the If's branches read its output.
    late = g.add_node("Relu", [g.inputs[0]], name="late")
    replace_all_uses_with(producer.output(0), late.output(0))
    g.remove(producer)
    assert [n.name for n in g] == ["if", "late"]
    version = model.version
    assert [n.name for n in topological_order(g)] == ["late", "if"]
    assert model.version == version  # topological_order never reorders the graph
    assert TopologicalSort()(model).modified is True
    assert [n.name for n in g] == ["late", "if"]
    verify(model)
    for c in (True, False):
        assert_equivalent(proto, to_proto(model), feeds={"x": np.array([-1, 2, -3], np.float32), "c": np.array(c)})
