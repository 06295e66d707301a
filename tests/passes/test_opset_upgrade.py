"""raise-opset: the opset goes up only when no operator's meaning changes, and then LayerNorm
spelled out in an opset-13 export fuses for onnxruntime targets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper
from pass_helpers import apply, const, make_model, vi

import onnxforge
from onnxforge import modelio
from onnxforge.passes import RaiseOpset
from onnxforge.passes.cleanup.opset_upgrade import blocking_ops, raise_opset

F = TensorProto.FLOAT


def _layernorm_mlp(opset: int) -> object:
    """Gemm, then LayerNorm spelled out (ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add), then Relu."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("ReduceMean", ["h"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["h", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "beta"], ["o"]),
        helper.make_node("Relu", ["o"], ["y"]),
    ]
    inits = [
        const("w", rng.standard_normal((32, 16))),
        const("b", rng.standard_normal(32)),
        const("two", 2.0),
        const("eps", 1e-5),
        const("g", rng.standard_normal(32)),
        const("beta", rng.standard_normal(32)),
    ]
    return make_model(nodes, [vi("x", F, [4, 16])], [vi("y", F, [4, 32])], inits, opset=opset)


def test_raises_when_every_op_keeps_its_meaning():
    a = apply(_layernorm_mlp(13), RaiseOpset())
    assert a.result.modified and a.after.opset_import[0].version == 17 and a.after.ir_version >= 8
    assert a.result.stats == {"from": 13, "to": 17}
    # Idempotent.
    assert RaiseOpset()(modelio.load(a.after).model).modified is False


def _roi_align(opset: int, in_function: bool) -> onnx.ModelProto:
    # RoiAlign-16 changed the default coordinate_transformation_mode to half_pixel.
    roi = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=2, output_width=2, sampling_ratio=2)
    inits = [const("rois", np.array([[0.3, 0.7, 5.1, 6.2]])), const("idx", [0], dtype=np.int64)]
    io = ([vi("x", F, [1, 1, 8, 8])], [vi("y", F, [1, 1, 2, 2])])
    if not in_function:
        return make_model([roi], *io, inits, opset=opset)
    fn = helper.make_function("local", "F", ["x", "rois", "idx"], ["y"], [roi], [helper.make_opsetid("", opset)])
    call = helper.make_node("F", ["x", "rois", "idx"], ["y"], domain="local")
    graph = helper.make_graph([call], "g", *io, inits)
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("local", 1)]
    return helper.make_model(graph, opset_imports=imports, ir_version=8, functions=[fn])


def test_kept_when_an_op_changed_meaning_or_the_model_is_older_than_13():
    # Opset 12 is left alone (13 moved Split's sizes, Squeeze/Unsqueeze axes to inputs).
    split = make_model(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=0)],
        [vi("x", F, [4])],
        [vi("a", F, [2]), vi("b", F, [2])],
        opset=12,
    )
    assert RaiseOpset()(modelio.load(split).model).modified is False
    for in_function in (False, True):
        model = modelio.load(_roi_align(13, in_function)).model
        assert blocking_ops(model, 17) == ["RoiAlign"]
        assert RaiseOpset()(model).modified is False


def test_function_bodies_are_raised_with_the_model():
    proto = _roi_align(13, in_function=True)
    relu = helper.make_node("Relu", ["x"], ["y"])
    proto.functions[0].CopyFrom(helper.make_function("local", "F", ["x", "rois", "idx"], ["y"], [relu], [helper.make_opsetid("", 13)]))
    a = apply(proto, RaiseOpset())  # checker: a function importing 13 under a model importing 17 is invalid
    assert a.result.modified
    assert [(i.domain, i.version) for i in a.after.functions[0].opset_import] == [("", 17)]


def test_inference_batchnorm_does_not_block():
    # BatchNormalization-14 only added training_mode (default 0) and training outputs.
    bn = make_model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
        [vi("x", F, [1, 2, 3, 3])],
        [vi("y", F, [1, 2, 3, 3])],
        [const(n, np.ones(2)) for n in "sbmv"],
        opset=13,
    )
    a = apply(bn, RaiseOpset())
    assert a.result.modified and a.after.opset_import[0].version == 17
    # With its training outputs it means something else at 14: the opset stays.
    bn.graph.node[0].output.extend(["mean", "var", "saved_mean", "saved_var"])
    assert blocking_ops(modelio.load(bn).model, 17) == ["BatchNormalization"]


def test_onnxruntime_targets_fuse_layernorm_in_an_opset_13_export():
    proto = _layernorm_mlp(13)
    portable = onnxforge.compile(proto, "optimize", verify=True)
    cpu = onnxforge.compile(proto, "optimize", target="cpu", verify=True)
    assert "LayerNormalization" not in Counter(n.op_type for n in portable.model.graph.node)
    assert portable.model.opset_import[0].version == 13  # portable output keeps the user's opset
    ops = Counter(n.op_type for n in cpu.model.graph.node)
    assert ops["LayerNormalization"] == 1 and sum(ops.values()) == 3  # Gemm, LayerNorm, Relu


def test_checked_raise_converts_only_where_an_op_changes_meaning():
    """raise_opset (what int8 uses for per-channel weights) shares raise-opset's rule: with no
    operator changing meaning it raises the number only; otherwise onnx's converter runs and
    its result must reproduce the outputs on the samples."""
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(2)]
    plain = modelio.load(_layernorm_mlp(13)).model
    raised, note = raise_opset(plain, 17, feeds)
    assert raised is not None and raised is not plain and "no operator changes meaning" in note
    assert raised.opset("") == 17 and plain.opset("") == 13
    old = make_model(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1), helper.make_node("Add", ["a", "b"], ["y"])],
        [vi("x", F, [4, 16])],
        [vi("y", F, [4, 8])],
        opset=11,
    )
    converted, note = raise_opset(modelio.load(old).model, 13, feeds)
    assert converted is not None and converted.opset("") == 13 and "raised from 11 to 13" in note
    none, why = raise_opset(modelio.load(old).model, 13, [])
    assert none is None and "no samples" in why
