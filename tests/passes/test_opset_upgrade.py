"""raise-opset: the opset goes up only when no operator's meaning changes, and then LayerNorm
spelled out in an opset-13 export fuses for onnxruntime targets."""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import TensorProto, helper
from pass_helpers import apply, const, make_model, vi

import onnxforge
from onnxforge import modelio
from onnxforge.passes import RaiseOpset
from onnxforge.passes.opset_upgrade import blocking_ops

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


def test_kept_when_an_op_changed_meaning_or_the_model_is_older_than_13():
    # Opset 12 is left alone (13 moved Split's sizes, Squeeze/Unsqueeze axes to inputs); at 13,
    # BatchNormalization-14 redefined its optional outputs (training_mode), so it blocks.
    split = make_model(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=0)],
        [vi("x", F, [4])],
        [vi("a", F, [2]), vi("b", F, [2])],
        opset=12,
    )
    assert RaiseOpset()(modelio.load(split).model).modified is False
    bn = make_model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
        [vi("x", F, [1, 2, 3, 3])],
        [vi("y", F, [1, 2, 3, 3])],
        [const(n, np.ones(2)) for n in "sbmv"],
        opset=13,
    )
    model = modelio.load(bn).model
    assert blocking_ops(model, 17) == ["BatchNormalization"]
    assert RaiseOpset()(model).modified is False


def test_onnxruntime_targets_fuse_layernorm_in_an_opset_13_export():
    proto = _layernorm_mlp(13)
    portable = onnxforge.compile(proto, "optimize", verify=True)
    cpu = onnxforge.compile(proto, "optimize", target="cpu", verify=True)
    assert "LayerNormalization" not in Counter(n.op_type for n in portable.model.graph.node)
    assert portable.model.opset_import[0].version == 13  # portable output keeps the user's opset
    ops = Counter(n.op_type for n in cpu.model.graph.node)
    assert ops["LayerNormalization"] == 1 and sum(ops.values()) == 3  # Gemm, LayerNorm, Relu
