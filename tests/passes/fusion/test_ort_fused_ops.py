"""onnxruntime contrib fusions (FusedConv, FusedGemm, Gelu/BiasGelu/FastGelu,
SkipLayerNormalization): structure and unchanged outputs on onnxruntime's CPU provider."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_helpers import const, make_model, rule_pass, vi

from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.ir import to_proto
from onnxforge.passes.fusion.ort_fused_ops import (
    FuseBiasGelu,
    FuseConvActivation,
    FuseGemmActivation,
    FuseSkipLayerNorm,
)
from onnxforge.passmanager import PassContext
from onnxforge.rules import rule_trace

F = TensorProto.FLOAT
RNG = np.random.default_rng(1)


def rnd(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def fuse(proto: onnx.ModelProto, *rules):  # type: ignore[no-untyped-def]
    model = modelio.load(proto).model
    ctx = PassContext()
    result = ctx.run(rule_pass(*rules), model)
    after = to_proto(model)
    assert_equivalent(proto, after, rtol=1e-4, atol=1e-5)
    return Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in after.graph.node), result.stats, rule_trace(ctx), after


@pytest.mark.parametrize(
    "act, attrs, extra",
    [
        ("Relu", {}, []),
        ("LeakyRelu", {"alpha": 0.2}, []),
        ("Sigmoid", {}, []),
        ("HardSigmoid", {"alpha": 0.2, "beta": 0.4}, []),
        ("Clip", {}, ["lo", "hi"]),
    ],
)
def test_fused_conv(act, attrs, extra):
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), helper.make_node(act, ["c", *extra], ["y"], **attrs)]
    inits = [const("W", rnd(4, 3, 3, 3)), const("B", rnd(4)), const("lo", np.array(0.0)), const("hi", np.array(6.0))]
    m = make_model(nodes, [vi("x", F, [1, 3, 5, 5])], [vi("y", F, [1, 4, 5, 5])], inits if extra else inits[:2])
    ops, stats, _, after = fuse(m, FuseConvActivation())
    assert ops == {"com.microsoft::FusedConv": 1}
    assert any(o.domain == "com.microsoft" for o in after.opset_import)


def test_fused_gemm():
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["g"], transB=1), helper.make_node("LeakyRelu", ["g"], ["y"], alpha=0.1)]
    m = make_model(nodes, [vi("x", F, [2, 4])], [vi("y", F, [2, 3])], [const("W", rnd(3, 4)), const("C", rnd(3))])
    ops, _, _, _ = fuse(m, FuseGemmActivation())
    assert ops == {"com.microsoft::FusedGemm": 1}


def _bias_gelu(form: str) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["h"])]
    if form == "erf":
        nodes += [
            helper.make_node("Div", ["h", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", ["h", "a"], ["p"]),
            helper.make_node("Mul", ["p", "half"], ["y"]),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["h", "h"], ["h2"]),
            helper.make_node("Mul", ["h2", "h"], ["h3"]),
            helper.make_node("Mul", ["h3", "k"], ["ck"]),
            helper.make_node("Add", ["h", "ck"], ["s"]),
            helper.make_node("Mul", ["s", "r"], ["sr"]),
            helper.make_node("Tanh", ["sr"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["a"]),
            helper.make_node("Mul", ["h", "a"], ["p"]),
            helper.make_node("Mul", ["p", "half"], ["y"]),
        ]
    inits = [const("W", rnd(8, 6)), const("b", rnd(6)), const("sqrt2", np.array(math.sqrt(2))), const("one", np.array(1.0)),
             const("half", np.array(0.5)), const("k", np.array(0.044715)), const("r", np.array(math.sqrt(2 / math.pi)))]
    return make_model(nodes, [vi("x", F, [2, 3, 8])], [vi("y", F, [2, 3, 6])], inits, value_info=[vi("m", F, [2, 3, 6])])


@pytest.mark.parametrize("form, op", [("erf", "BiasGelu"), ("tanh", "FastGelu")])
def test_bias_gelu(form, op):
    ops, stats, _, _ = fuse(_bias_gelu(form), FuseBiasGelu())
    assert ops == {"MatMul": 1, f"com.microsoft::{op}": 1}


def _skip_ln(sum_also_read: bool) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["mb"]),
        helper.make_node("Add", ["mb", "res"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "beta"], ["y"], axis=-1, epsilon=1e-5, name="ln"),
    ]
    outputs = [vi("y", F, [2, 3, 8])]
    if sum_also_read:
        nodes.append(helper.make_node("Relu", ["s"], ["z"]))
        outputs.append(vi("z", F, [2, 3, 8]))
    inits = [const("W", rnd(8, 8)), const("b", rnd(8)), const("g", rnd(8)), const("beta", rnd(8))]
    return make_model(nodes, [vi("x", F, [2, 3, 8]), vi("res", F, [2, 3, 8])], outputs, inits,
                      value_info=[vi("m", F, [2, 3, 8]), vi("mb", F, [2, 3, 8]), vi("s", F, [2, 3, 8])])


def test_skip_layer_norm_absorbs_the_bias():
    ops, _, _, after = fuse(_skip_ln(False), FuseSkipLayerNorm())
    assert ops == {"MatMul": 1, "com.microsoft::SkipLayerNormalization": 1}
    sln = next(n for n in after.graph.node if n.op_type == "SkipLayerNormalization")
    assert len(sln.input) == 5


def test_skip_layer_norm_hands_the_sum_to_its_other_readers():
    ops, _, _, after = fuse(_skip_ln(True), FuseSkipLayerNorm())
    assert ops["com.microsoft::SkipLayerNormalization"] == 1 and "LayerNormalization" not in ops
    sln = next(n for n in after.graph.node if n.op_type == "SkipLayerNormalization")
    assert len(sln.output) == 4 and sln.output[3]


def test_skip_layer_norm_needs_3d():
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("LayerNormalization", ["s", "g", "beta"], ["y"], name="ln")]
    m = make_model(nodes, [vi("a", F, [3, 8]), vi("b", F, [3, 8])], [vi("y", F, [3, 8])], [const("g", rnd(8)), const("beta", rnd(8))])
    _, stats, trace, _ = fuse(m, FuseSkipLayerNorm())
    assert stats == {} and "3-D" in " ".join(trace.explain("ln"))
