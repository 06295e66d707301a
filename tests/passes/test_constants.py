"""Constant normalization."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pass_helpers import apply, make_model, ops, subgraph, vi

from onnxforge import modelio
from onnxforge.passes import NormalizeConstants

STR = TensorProto.STRING


def _all_forms_model(ir_version: int = 8, opset: int = 17):
    nodes = [
        helper.make_node("Constant", [], ["c_t"], value=numpy_helper.from_array(np.array([1.0, 2.0], np.float32))),
        helper.make_node("Constant", [], ["c_f"], value_float=0.5),
        helper.make_node("Constant", [], ["c_fs"], value_floats=[1.0, -1.0]),
        helper.make_node("Constant", [], ["c_i"], value_int=3),
        helper.make_node("Constant", [], ["c_is"], value_ints=[2, 1]),
        helper.make_node("Constant", [], ["c_s"], value_string="h\u00e9llo"),
        helper.make_node("Constant", [], ["c_ss"], value_strings=["a", "bc"]),
        helper.make_node("Mul", ["x", "c_t"], ["a"]),
        helper.make_node("Mul", ["a", "c_f"], ["b"]),
        helper.make_node("Add", ["b", "c_fs"], ["y"]),
        helper.make_node("Reshape", ["y", "c_is"], ["y2"]),
        helper.make_node("Cast", ["c_i"], ["y3"], to=TensorProto.FLOAT),
    ]
    return make_model(
        nodes,
        [vi("x", shape=[2])],
        [vi("y2", shape=[2, 1]), vi("y3", shape=[]), vi("c_s", STR, []), vi("c_ss", STR, [2])],
        ir_version=ir_version,
        opset=opset,
    )


def test_every_dense_form_becomes_an_initializer_with_the_same_name():
    a = apply(_all_forms_model(), NormalizeConstants())
    assert a.result.modified is True
    assert a.stats == {"converted_constants": 7}
    assert ops(a.after) == ["Mul", "Mul", "Add", "Reshape", "Cast"]
    inits = {t.name: numpy_helper.to_array(t) for t in a.after.graph.initializer}
    assert set(inits) == {"c_t", "c_f", "c_fs", "c_i", "c_is", "c_s", "c_ss"}
    assert inits["c_f"].dtype == np.float32 and inits["c_f"].shape == ()
    assert inits["c_is"].dtype == np.int64 and list(inits["c_is"]) == [2, 1]
    strings = {t.name: list(t.string_data) for t in a.after.graph.initializer if t.data_type == STR}
    assert strings == {"c_s": ["h\u00e9llo".encode()], "c_ss": [b"a", b"bc"]}
    # graph outputs that were Constant outputs keep their names (and are now initializers)
    assert [o.name for o in a.after.graph.output] == ["y2", "y3", "c_s", "c_ss"]
    assert NormalizeConstants()(a.model).modified is False


def test_ir_version_3_keeps_constant_nodes():
    a = apply(_all_forms_model(ir_version=3, opset=13), NormalizeConstants())
    assert a.result.modified is False
    assert ops(a.after).count("Constant") == 7
    assert not a.after.graph.initializer


def test_sparse_constant_is_left_alone():
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("v", TensorProto.FLOAT, [1], [5.0]), helper.make_tensor("i", TensorProto.INT64, [1], [1]), [3]
    )
    nodes = [
        helper.make_node("Constant", [], ["sp"], sparse_value=sparse),
        helper.make_node("Add", ["x", "sp"], ["y"]),
    ]
    a = apply(make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])]), NormalizeConstants())
    assert a.result.modified is False
    assert ops(a.after) == ["Constant", "Add"]


def _if_model():
    """Constants inside both branches of an If, one of them the branch output, one read by a
    node that also reads an outer value."""
    k = numpy_helper.from_array(np.array([10.0, 20.0, 30.0], np.float32))
    then_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["k_then"], value=k),
            helper.make_node("Add", ["s", "k_then"], ["t_out"]),
        ],
        "then",
        [],
        [vi("t_out", shape=[3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["e_out"], value_floats=[7.0, 8.0, 9.0])],
        "else",
        [],
        [vi("e_out", shape=[3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["s"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    return make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])


def test_constants_in_an_if_body_become_subgraph_initializers():
    for c in (True, False):
        a = apply(_if_model(), NormalizeConstants(), feeds={"x": np.array([1, -2, 3], np.float32), "c": np.array(c)})
        assert a.stats == {"converted_constants": 2}
        then_g = subgraph(a.after, "If", "then_branch")
        else_g = subgraph(a.after, "If", "else_branch")
        assert ops(then_g) == ["Add"] and [t.name for t in then_g.initializer] == ["k_then"]
        assert ops(else_g) == [] and [t.name for t in else_g.initializer] == ["e_out"]
        assert [o.name for o in else_g.output] == ["e_out"]
        onnx.checker.check_model(a.after, full_check=True)


def test_values_keep_their_uses_and_identity():
    loaded = modelio.load(_all_forms_model())
    model = loaded.model
    before = {v.name: v for n in model.graph for v in n.outputs if n.op_type == "Constant"}
    NormalizeConstants()(model)
    for name, v in before.items():
        assert model.graph.initializers[name] is v
        assert v.producer is None and v.is_constant()
