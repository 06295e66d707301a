"""The IR owns its containers: every edit bumps ``model.version`` without help from the pass,
``producer`` cannot be assigned, a refused ``remove`` changes nothing, and ``clone`` is deep."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxforge.ir import PROVENANCE_KEY, Model, Value, from_proto, to_proto


def _model() -> Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], np.arange(6, dtype=np.float32))
    nodes = [helper.make_node("Add", ["x", "w"], ["t"], name="add"), helper.make_node("Relu", ["t"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _bumps(model: Model, edit) -> bool:  # type: ignore[no-untyped-def]
    before = model.version
    edit()
    return model.version > before


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.graph.initializers.pop("w"),
        lambda m: m.graph.initializers.__setitem__("z", m.graph.initializers["w"]),
        lambda m: m.graph.initializers.update({"z": m.graph.initializers["w"]}),
        lambda m: m.graph.extra_value_info.append(onnx.ValueInfoProto(name="q")),
        lambda m: setattr(m.graph, "extra_value_info", []),
        lambda m: m.graph.quantization_annotation.append(onnx.TensorAnnotation(tensor_name="t")),
        lambda m: m.opset_imports.__setitem__("com.microsoft", 1),
        lambda m: m.opset_imports.setdefault("com.microsoft", 1),
        lambda m: setattr(m, "ir_version", m.ir_version + 1),
        lambda m: m.graph.initializers["w"].set_const(np.zeros((2, 3), np.float32)),
        lambda m: setattr(m.graph.initializers["w"], "const", None),
        lambda m: setattr(m.graph.nodes[0].outputs[0], "type", onnx.TypeProto()),
    ],
    ids=[
        "init-pop",
        "init-set",
        "init-update",
        "value-info-append",
        "value-info-assign",
        "annotation",
        "opset-set",
        "opset-setdefault",
        "ir-version",
        "set-const",
        "const-assign",
        "retype",
    ],
)
def test_every_container_edit_bumps_the_version(edit):
    m = _model()
    assert _bumps(m, lambda: edit(m))


def test_reads_and_no_op_edits_do_not_bump():
    m = _model()
    v = m.version
    _ = dict(m.graph.initializers), list(m.graph.extra_value_info), m.opset_imports.get("")
    m.opset_imports.setdefault("", 99)  # present already: no change
    m.ir_version = m.ir_version
    m.graph.initializers.pop("missing", None)
    assert m.version == v


def test_shell_edits_bump_through_edit_shell():
    m = _model()
    assert _bumps(m, lambda: m.edit_shell().__enter__().metadata_props.add(key="k", value="v"))


def test_producer_is_read_only():
    m = _model()
    t = m.graph.nodes[0].outputs[0]
    assert t.producer is m.graph.nodes[0]
    with pytest.raises(AttributeError):
        t.producer = None  # type: ignore[misc]


def test_new_outputs_set_on_a_node_belong_to_its_graph():
    m = _model()
    node = m.graph.nodes[1]
    fresh = Value("fresh")
    node.set_outputs([fresh])
    assert fresh.graph is m.graph
    assert _bumps(m, lambda: setattr(fresh, "type", onnx.TypeProto()))


def test_refused_remove_leaves_the_graph_unchanged():
    m = _model()
    add, relu = m.graph.nodes
    other = _model().graph.nodes[0]
    before = (m.version, m.graph.nodes, [v for v in add.inputs])
    with pytest.raises(ValueError):
        m.graph.remove([relu, add, other], safe=False)  # `other` is not in this graph
    assert (m.version, m.graph.nodes, list(add.inputs)) == before
    assert all((add, i) in v._uses for i, v in enumerate(add.inputs) if v is not None)
    with pytest.raises(ValueError):
        m.graph.remove([add])  # its output is still read by relu
    assert m.graph.nodes == [add, relu]


def test_clone_is_deep_and_independent():
    m = _model()
    twin = m.clone()
    assert to_proto(twin).SerializeToString() == to_proto(m).SerializeToString()
    twin.graph.initializers["w"].set_const(np.ones((2, 3), np.float32))
    twin.graph.remove(twin.graph.nodes[1], safe=False)
    assert np.array_equal(m.graph.initializers["w"].array(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert len(m.graph.nodes) == 2
    ids = {n.id for n in m.graph} | {v.id for v in m.graph.values()}
    assert not ids & ({n.id for n in twin.graph} | {v.id for v in twin.graph.values()})
    # The clone's containers are still owned: edits bump the clone, not the original.
    v = m.version
    assert _bumps(twin, lambda: twin.graph.initializers.pop("w"))
    assert m.version == v


def test_provenance_key_is_the_one_nodes_carry():
    m = _model()
    node = m.graph.add_node("Identity", [m.graph.inputs[0]], provenance="my-rule")
    assert (PROVENANCE_KEY, "my-rule") in [(p.key, p.value) for p in node.metadata_props]
