"""Each portable fusion on its own small model: it fires, the structure is what we expect, and
onnxruntime outputs are unchanged (optimizations off, float-reordering tolerance)."""

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
from onnxforge.passes.fusion.activations import FuseGelu, FuseHardSigmoid, FuseHardSwish, FuseSoftmax
from onnxforge.passes.fusion.affine import FoldOffsetIntoBias, FoldScaleIntoLinear, MatMulAddToGemm
from onnxforge.passes.fusion.batchnorm import FuseConvBatchNorm, FuseLinearBatchNorm
from onnxforge.passes.fusion.layout import FuseReshapeChain, FuseTransposeChain, FuseTransposeIntoGemm
from onnxforge.passes.fusion.normalization import FuseLayerNorm
from onnxforge.passes.fusion.padding import FusePadIntoConvPool
from onnxforge.passmanager import PassContext
from onnxforge.rules import rule_trace

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def rnd(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def fuse(proto: onnx.ModelProto, *rules, rtol: float = 1e-4, atol: float = 1e-5):  # type: ignore[no-untyped-def]
    """Apply ``rules`` and return (ops after, hits, trace), checking outputs."""
    onnx.checker.check_model(proto)
    model = modelio.load(proto).model
    ctx = PassContext()
    result = ctx.run(rule_pass(*rules), model)
    after = to_proto(model)
    onnx.checker.check_model(after)
    assert_equivalent(proto, after, rtol=rtol, atol=atol)
    ops = Counter(n.op_type for n in after.graph.node)
    return ops, result.stats, rule_trace(ctx), after


def bn_inits(c: int, prefix: str = "bn") -> list[onnx.TensorProto]:
    return [
        const(f"{prefix}_s", RNG.uniform(0.5, 1.5, c)),
        const(f"{prefix}_b", rnd(c)),
        const(f"{prefix}_m", rnd(c)),
        const(f"{prefix}_v", RNG.uniform(0.5, 2.0, c)),
    ]


def bn(inp: str, out: str, prefix: str = "bn", name: str = "") -> onnx.NodeProto:
    return helper.make_node(
        "BatchNormalization", [inp, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [out], epsilon=1e-3, name=name
    )


@pytest.mark.parametrize("bias", [True, False])
def test_conv_batchnorm(bias):
    inputs = ["x", "W", "B"] if bias else ["x", "W"]
    nodes = [helper.make_node("Conv", inputs, ["c"], pads=[1, 1, 1, 1]), bn("c", "y")]
    inits = [const("W", rnd(4, 3, 3, 3)), const("B", rnd(4)), *bn_inits(4)]
    m = make_model(nodes, [vi("x", F, [1, 3, 6, 6])], [vi("y", F, [1, 4, 6, 6])], inits)
    ops, stats, _, after = fuse(m, FuseConvBatchNorm())
    assert ops == {"Conv": 1} and stats == {"conv-batchnorm": 1}
    assert any(p.key == "onnxforge.rule" and p.value == "conv-batchnorm" for p in after.graph.node[0].metadata_props)


def test_grouped_conv_transpose_batchnorm():
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["c"], group=2, strides=[2, 2]), bn("c", "y")]
    inits = [const("W", rnd(4, 3, 3, 3)), *bn_inits(6)]
    m = make_model(nodes, [vi("x", F, [1, 4, 5, 5])], [vi("y", F, [1, 6, 11, 11])], inits)
    ops, stats, _, _ = fuse(m, FuseConvBatchNorm())
    assert ops == {"ConvTranspose": 1}


def test_conv_batchnorm_refuses_a_shared_weight_and_says_why():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        bn("c", "y", name="the_bn"),
        helper.make_node("Conv", ["x", "W"], ["z"]),
    ]
    m = make_model(nodes, [vi("x", F, [1, 3, 6, 6])], [vi("y", F, [1, 4, 4, 4]), vi("z", F, [1, 4, 4, 4])], [const("W", rnd(4, 3, 3, 3)), *bn_inits(4)])
    ops, stats, trace, _ = fuse(m, FuseConvBatchNorm())
    assert stats == {} and ops["BatchNormalization"] == 1
    assert "shared" in trace.explain("the_bn")[0]


def test_batchnorm_with_parameters_of_different_lengths_is_left_alone():
    """Found by the fuzzer: a BN whose variance had 2 values for 104 channels crashed the fuse
    pass with a numpy broadcast error; the rule now declines with a reason."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn("c", "y", name="the_bn")]
    inits = [const("W", rnd(4, 3, 3, 3)), *bn_inits(4)]
    inits[-1] = const("bn_v", RNG.uniform(0.5, 2.0, 2))
    m = make_model(nodes, [vi("x", F, [1, 3, 6, 6])], [vi("y", F, [1, 4, 4, 4])], inits)
    model = modelio.load(m).model
    ctx = PassContext()
    result = ctx.run(rule_pass(FuseConvBatchNorm()), model)
    assert not result.modified
    assert "differ in length (4, 4, 4, 2)" in rule_trace(ctx).explain("the_bn")[0]


def test_gemm_and_matmul_batchnorm():
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["g"], transB=1), bn("g", "y"), helper.make_node("MatMul", ["y", "W2"], ["m"]), bn("m", "z", "bn2")]
    inits = [const("W", rnd(5, 4)), const("C", rnd(5)), *bn_inits(5), const("W2", rnd(5, 3)), *bn_inits(3, "bn2")]
    m = make_model(nodes, [vi("x", F, [2, 4])], [vi("z", F, [2, 3])], inits, value_info=[vi("m", F, [2, 3]), vi("g", F, [2, 5]), vi("y", F, [2, 5])])
    ops, stats, _, _ = fuse(m, FuseLinearBatchNorm())
    assert ops == {"Gemm": 2} and stats == {"linear-batchnorm": 2}


def test_constant_scale_and_offset_fold_into_conv_and_matmul():
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"]),
        helper.make_node("Mul", ["c", "s"], ["cs"]),
        helper.make_node("Add", ["cs", "o"], ["co"]),
        helper.make_node("Flatten", ["co"], ["f"]),
        helper.make_node("MatMul", ["f", "W2"], ["mm"]),
        helper.make_node("Mul", ["mm", "s2"], ["y"]),
    ]
    inits = [const("W", rnd(4, 3, 1, 1)), const("B", rnd(4)), const("s", rnd(1, 4, 1, 1)), const("o", rnd(4, 1, 1)),
             const("W2", rnd(64, 5)), const("s2", rnd(5))]
    m = make_model(nodes, [vi("x", F, [1, 3, 4, 4])], [vi("y", F, [1, 5])], inits, value_info=[vi("mm", F, [1, 5]), vi("c", F, [1, 4, 4, 4]), vi("cs", F, [1, 4, 4, 4])])
    ops, stats, _, _ = fuse(m, FoldScaleIntoLinear(), FoldOffsetIntoBias())
    assert ops == {"Conv": 1, "Flatten": 1, "MatMul": 1}, ops
    assert stats == {"fold-scale-into-linear": 2, "fold-offset-into-bias": 1}


def test_scale_that_varies_along_another_axis_is_refused():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"], name="mul")]
    m = make_model(nodes, [vi("x", F, [1, 3, 4, 4])], [vi("y", F, [1, 4, 4, 4])], [const("W", rnd(4, 3, 1, 1)), const("s", rnd(1, 1, 4, 1))],
                   value_info=[vi("c", F, [1, 4, 4, 4])])
    _, stats, trace, _ = fuse(m, FoldScaleIntoLinear())
    assert stats == {} and "per output channel" in " ".join(trace.explain("mul"))


def test_matmul_add_to_gemm_only_for_2d():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
             helper.make_node("MatMul", ["x3", "W"], ["m3"]), helper.make_node("Add", ["m3", "b"], ["y3"], name="add3")]
    inits = [const("W", rnd(4, 3)), const("b", rnd(3))]
    m = make_model(nodes, [vi("x", F, [2, 4]), vi("x3", F, [2, 5, 4])], [vi("y", F, [2, 3]), vi("y3", F, [2, 5, 3])], inits,
                   value_info=[vi("m", F, [2, 3]), vi("m3", F, [2, 5, 3])])
    ops, stats, trace, _ = fuse(m, MatMulAddToGemm())
    assert ops == {"Gemm": 1, "MatMul": 1, "Add": 1}
    assert "2-D" in " ".join(trace.explain("add3"))


@pytest.mark.parametrize("op", ["Conv", "AveragePool", "MaxPool"])
def test_pad_into_conv_and_pools(op):
    value = -math.inf if op == "MaxPool" else 0.0
    pads = const("pads", np.array([0, 0, 1, 2, 0, 0, 1, 0]), np.int64)
    pv = const("pv", np.array(value), np.float32)
    attrs = {"kernel_shape": [3, 3]} if op != "Conv" else {}
    nodes = [helper.make_node("Pad", ["x", "pads", "pv"], ["p"]), helper.make_node(op, ["p", "W"] if op == "Conv" else ["p"], ["y"], **attrs)]
    inits = [pads, pv] + ([const("W", rnd(2, 3, 3, 3))] if op == "Conv" else [])
    out = [1, 2, 6, 6] if op == "Conv" else [1, 3, 6, 6]
    m = make_model(nodes, [vi("x", F, [1, 3, 6, 6])], [vi("y", F, out)], inits)
    ops, stats, _, after = fuse(m, FusePadIntoConvPool())
    assert ops == {op: 1}
    assert list(next(a for a in after.graph.node[0].attribute if a.name == "pads").ints) == [1, 2, 1, 0]


def test_pad_with_nonzero_value_is_refused_for_conv():
    pads = const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1]), np.int64)
    nodes = [helper.make_node("Pad", ["x", "pads", "pv"], ["p"]), helper.make_node("Conv", ["p", "W"], ["y"], name="conv")]
    m = make_model(nodes, [vi("x", F, [1, 3, 6, 6])], [vi("y", F, [1, 2, 6, 6])], [pads, const("pv", np.array(1.0)), const("W", rnd(2, 3, 3, 3))])
    _, stats, trace, _ = fuse(m, FusePadIntoConvPool())
    assert stats == {} and "not 0" in " ".join(trace.explain("conv"))


def test_transpose_chains_and_transposes_into_gemm():
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 2, 0]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[2, 0, 1]),  # cancels
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["t3"], ["y"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["a"], ["at"], perm=[1, 0]),
        helper.make_node("MatMul", ["at", "B"], ["z"]),
    ]
    m = make_model(nodes, [vi("x", F, [2, 3, 4]), vi("a", F, [4, 2])], [vi("y", F, [4, 2, 3]), vi("z", F, [2, 5])], [const("B", rnd(4, 5))],
                   value_info=[vi("at", F, [2, 4])])
    ops, stats, _, _ = fuse(m, FuseTransposeChain(), FuseTransposeIntoGemm())
    assert ops == {"Transpose": 1, "Gemm": 1}


def test_reshape_chain_collapses_with_symbolic_batch():
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
        helper.make_node("Reshape", ["u", "s1"], ["r"]),
        helper.make_node("Flatten", ["r"], ["y"], axis=1),
    ]
    inits = [const("ax", np.array([1]), np.int64), const("s1", np.array([0, 6, 4]), np.int64)]
    m = make_model(nodes, [vi("x", F, ["batch", 4, 6])], [vi("y", F, ["batch", 24])], inits,
                   value_info=[vi("u", F, ["batch", 1, 4, 6]), vi("r", F, ["batch", 6, 4])])
    ops, stats, _, _ = fuse(m, FuseReshapeChain())
    assert ops == {"Reshape": 1}


def _layer_norm_nodes(square: str = "Pow") -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    sq = (helper.make_node("Pow", ["d", "two"], ["sq"]) if square == "Pow" else helper.make_node("Mul", ["d", "d"], ["sq"]))
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        sq,
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["ng"]),
        helper.make_node("Add", ["ng", "beta"], ["y"]),
    ]
    inits = [const("two", np.array(2.0)), const("eps", np.array(1e-5)), const("gamma", rnd(8)), const("beta", rnd(8))]
    return nodes, inits


@pytest.mark.parametrize("square", ["Pow", "Mul"])
def test_layer_norm(square):
    nodes, inits = _layer_norm_nodes(square)
    m = make_model(nodes, [vi("x", F, [2, 3, 8])], [vi("y", F, [2, 3, 8])], inits)
    ops, stats, _, _ = fuse(m, FuseLayerNorm())
    assert ops == {"LayerNormalization": 1}


def test_layer_norm_needs_opset_17_and_trailing_axes():
    nodes, inits = _layer_norm_nodes()
    m = make_model(nodes, [vi("x", F, [2, 3, 8])], [vi("y", F, [2, 3, 8])], inits, opset=16)
    _, stats, _, _ = fuse(m, FuseLayerNorm())
    assert stats == {}
    nodes, inits = _layer_norm_nodes()
    for n in nodes:
        if n.op_type == "ReduceMean":
            n.attribute[0].ints[:] = [1]
    nodes[-1].name = "end"
    m = make_model(nodes, [vi("x", F, [2, 8, 8])], [vi("y", F, [2, 8, 8])], inits)
    _, stats, trace, _ = fuse(m, FuseLayerNorm())
    assert stats == {} and "trailing" in " ".join(trace.explain("end"))


def _gelu_erf() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["x", "a"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    return nodes, [const("sqrt2", np.array(math.sqrt(2))), const("one", np.array(1.0)), const("half", np.array(0.5))]


def _gelu_tanh() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [
        helper.make_node("Pow", ["x", "three"], ["c"]),
        helper.make_node("Mul", ["c", "k"], ["ck"]),
        helper.make_node("Add", ["x", "ck"], ["s"]),
        helper.make_node("Mul", ["s", "r"], ["sr"]),
        helper.make_node("Tanh", ["sr"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["a"]),
        helper.make_node("Mul", ["x", "half"], ["xh"]),
        helper.make_node("Mul", ["xh", "a"], ["y"]),
    ]
    inits = [const("three", np.array(3.0)), const("k", np.array(0.044715)), const("r", np.array(math.sqrt(2 / math.pi))),
             const("one", np.array(1.0)), const("half", np.array(0.5))]
    return nodes, inits


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_gelu_opset_20(form):
    nodes, inits = _gelu_erf() if form == "erf" else _gelu_tanh()
    m = make_model(nodes, [vi("x", F, [3, 7])], [vi("y", F, [3, 7])], inits, opset=20, ir_version=9)
    ops, stats, _, after = fuse(m, FuseGelu())
    assert ops == {"Gelu": 1}
    approx = next(a for a in after.graph.node[0].attribute if a.name == "approximate").s.decode()
    assert approx == ("none" if form == "erf" else "tanh")


def test_gelu_is_not_fused_below_opset_20():
    nodes, inits = _gelu_erf()
    m = make_model(nodes, [vi("x", F, [3, 7])], [vi("y", F, [3, 7])], inits, opset=17)
    _, stats, _, _ = fuse(m, FuseGelu())
    assert stats == {}


def test_hard_sigmoid_and_hard_swish():
    nodes = [
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
        helper.make_node("Div", ["c", "six"], ["hs"]),
        helper.make_node("Mul", ["x", "hs"], ["y"]),
    ]
    inits = [const("three", np.array(3.0)), const("zero", np.array(0.0)), const("six", np.array(6.0))]
    m = make_model(nodes, [vi("x", F, [2, 9])], [vi("y", F, [2, 9])], inits, opset=14)
    ops, stats, _, _ = fuse(m, FuseHardSigmoid(), FuseHardSwish())
    assert ops == {"HardSwish": 1} and stats == {"hard-sigmoid": 1, "hard-swish": 1}


@pytest.mark.parametrize("with_max", [True, False])
def test_softmax(with_max):
    axes = const("axes", np.array([1]), np.int64)
    nodes = [helper.make_node("ReduceMax", ["x"], ["mx"], axes=[1]), helper.make_node("Sub", ["x", "mx"], ["d"])] if with_max else []
    src = "d" if with_max else "x"
    nodes += [
        helper.make_node("Exp", [src], ["e"]),
        helper.make_node("ReduceSum", ["e", "axes"], ["s"]),
        helper.make_node("Div", ["e", "s"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", F, [2, 5, 3])], [vi("y", F, [2, 5, 3])], [axes], opset=17)
    ops, stats, _, _ = fuse(m, FuseSoftmax())
    assert ops == {"Softmax": 1}


def test_rules_never_fire_when_an_intermediate_is_read_elsewhere():
    nodes, inits = _layer_norm_nodes()
    nodes[-1].name = "end"
    m = make_model(nodes, [vi("x", F, [2, 3, 8])], [vi("y", F, [2, 3, 8]), vi("std", F, [2, 3, 1])], inits)
    _, stats, trace, _ = fuse(m, FuseLayerNorm())
    assert stats == {} and "graph output" in " ".join(trace.explain("end"))


def test_gemm_on_flattened_input_becomes_matmul_add():
    from onnxforge.passes.fusion.affine import GemmOnFlattenedInput

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["lead"]),
        helper.make_node("Concat", ["lead", "n"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["g"]),
        helper.make_node("Reshape", ["g", "target"], ["y"]),
    ]
    inits = [const("zero", np.array([0]), np.int64), const("two", np.array([2]), np.int64), const("n", np.array([5]), np.int64),
             const("flat_shape", np.array([-1, 4]), np.int64), const("W", rnd(4, 5)), const("b", rnd(5))]
    m = make_model(nodes, [vi("x", F, ["batch", "seq", 4])], [vi("y", F, ["batch", "seq", 5])], inits,
                   value_info=[vi("flat", F, [None, 4]), vi("g", F, [None, 5])])
    ops, stats, _, _ = fuse(m, GemmOnFlattenedInput())
    assert stats == {"gemm-on-flattened-input": 1}
    assert ops["MatMul"] == 1 and ops["Add"] == 1 and "Gemm" not in ops and ops.get("Reshape", 0) == 0
