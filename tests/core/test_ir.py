"""The IR: lossless round trips, use-def links, mutation bookkeeping, views."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from builders import if_with_capture, mlp
from onnx import TensorProto, helper

from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.errors import ModelError
from onnxforge.ir import from_proto, replace_all_uses_with, to_networkx, to_proto, verify


def _canonical(m: onnx.ModelProto) -> onnx.ModelProto:
    """Same model with nodes/lists in a canonical order is what we compare."""
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def test_roundtrip_keeps_everything_around_the_graph():
    m = if_with_capture()
    ir = from_proto(m)
    out = to_proto(ir)
    assert out.functions == m.functions
    assert out.metadata_props == m.metadata_props
    assert out.doc_string == "model doc" and out.producer_name == "onnxforge-tests"
    assert out.graph.doc_string == "main graph doc"
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("local", 1)}
    assert out.graph.input == m.graph.input and out.graph.output == m.graph.output
    assert [n.name for n in out.graph.node] == [n.name for n in m.graph.node]
    onnx.checker.check_model(out, full_check=True)


def test_subgraph_reads_outer_value_through_the_same_value_object():
    ir = from_proto(if_with_capture())
    mul = next(n for n in ir.graph if n.op_type == "Mul")
    s = mul.outputs[0]
    users = {u.name for u, _ in s.uses()}
    assert users == {"then_add", "else_sub"}
    if_node = next(n for n in ir.graph if n.op_type == "If")
    assert s in __import__("onnxforge.ir", fromlist=["captured_values"]).captured_values(if_node)
    # the networkx view turns the capture into an edge mul -> if
    g = to_networkx(ir.graph)
    assert g.has_edge(mul.id, if_node.id)


@pytest.mark.parametrize("name", ["test_identity_opt", "test_if_opt", "test_loop16_seq_none", "test_sequence_map_add_2_sequences"])
def test_backend_cases_that_break_graphsurgeon_roundtrip(name):
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = next(c for c in collect_testcases() if c.name == name)
    ir = from_proto(case.model)
    verify(ir)
    out = to_proto(ir)
    onnx.checker.check_model(out, full_check=True)
    assert out.graph.input == case.model.graph.input
    assert out.graph.output == case.model.graph.output


def test_uses_carry_input_index_and_replace_all_uses():
    m = mlp()
    ir = from_proto(m)
    mm, add, relu, ident = ir.graph.nodes
    h = mm.outputs[0]
    assert h.uses() == [(add, 0)]
    assert add.inputs[1].uses() == [(add, 1)]
    v0 = ir.version
    replace_all_uses_with(h, add.inputs[1])
    assert ir.version > v0
    assert add.inputs[0] is add.inputs[1]
    assert h.uses() == []


def test_replace_graph_output_keeps_its_name_and_type():
    ir = from_proto(mlp())
    _, _, relu, ident = ir.graph.nodes
    y = ident.outputs[0]
    replace_all_uses_with(y, relu.outputs[0])
    ir.graph.remove(ident)
    out = ir.graph.outputs[0]
    assert out.name == "y" and out is relu.outputs[0]
    p = to_proto(ir)
    assert p.graph.output[0] == mlp().graph.output[0]
    assert_equivalent(mlp(), p)


def test_replace_graph_output_with_graph_input_inserts_identity():
    ir = from_proto(mlp())
    y = ir.graph.outputs[0]
    x = ir.graph.inputs[0]
    # (shapes differ, but we only check the naming mechanics)
    replace_all_uses_with(y, x)
    out = ir.graph.outputs[0]
    assert out.name == "y" and out.producer.op_type == "Identity" and out.producer.inputs[0] is x
    verify(ir)


def test_remove_safe_refuses_used_nodes():
    ir = from_proto(mlp())
    mm = ir.graph.nodes[0]
    with pytest.raises(ValueError, match="still used"):
        ir.graph.remove(mm)
    ident = ir.graph.nodes[-1]
    with pytest.raises(ValueError, match="graph output"):
        ir.graph.remove(ident)


def test_toposort_restores_order_and_detects_cycles():
    m = mlp()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    loaded = modelio.load(m)  # load toposorts
    assert [n.name for n in loaded.model.graph] == ["mm", "add", "relu", "id"]
    cyc = mlp()
    cyc.graph.node[0].input[0] = "r"  # mm reads relu's output: a cycle
    with pytest.raises(ModelError):
        modelio.load(cyc, check=False)


def test_undefined_input_is_a_model_error():
    m = mlp()
    m.graph.node[1].input[1] = "nope"
    with pytest.raises(ModelError, match="nope"):
        from_proto(m)


def test_version_bumps_on_every_mutation_kind():
    ir = from_proto(mlp())
    g = ir.graph
    seen = [ir.version]

    def bumped():
        assert ir.version > seen[-1]
        seen.append(ir.version)

    n = g.add_node("Neg", [g.inputs[0]])
    bumped()
    n.set_attr("foo", 1)
    bumped()
    n.set_input(0, g.outputs[0])
    bumped()
    g.remove(n)
    bumped()
    g.add_initializer("c", np.zeros(2, np.float32))
    bumped()


def test_unique_names_never_collide():
    ir = from_proto(mlp())
    names = {v.name for v in ir.graph.values()}
    fresh = [ir.unique_name("h") for _ in range(5)]
    assert len(set(fresh)) == 5 and not (set(fresh) & names)


def test_verify_catches_desynchronized_use_lists():
    ir = from_proto(mlp())
    add = ir.graph.nodes[1]
    add._inputs[0] = ir.graph.inputs[0]  # bypass the API on purpose
    with pytest.raises(ModelError, match="use-def"):
        verify(ir)


def test_sparse_initializer_and_value_info_survive():
    m = mlp()
    vi = helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 3])
    m.graph.value_info.append(vi)
    sp = helper.make_sparse_tensor(
        helper.make_tensor("sp", TensorProto.FLOAT, [1], [5.0]),
        helper.make_tensor("sp_idx", TensorProto.INT64, [1], [0]),
        [3],
    )
    m.graph.sparse_initializer.append(sp)
    m.graph.node.append(helper.make_node("Add", ["y", "sp"], ["y2"], name="addsp"))
    m.graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 3]))
    out = to_proto(from_proto(m))
    assert list(out.graph.value_info) == [vi]
    assert list(out.graph.sparse_initializer) == [sp]
    assert_equivalent(m, out)


def test_renaming_or_retyping_a_value_is_a_mutation():
    ir = from_proto(mlp())
    h = ir.graph.nodes[0].outputs[0]
    v0 = ir.version
    h.name = "renamed"
    assert ir.version > v0
    v1 = ir.version
    h.type = onnx.TypeProto()
    assert ir.version > v1
    v2 = ir.version
    h.name = "renamed"  # same name: no change
    assert ir.version == v2
