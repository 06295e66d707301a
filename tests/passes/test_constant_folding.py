"""ConstantFolding: structure (what is folded, what is not, stats, names and types) and numerical
equivalence under onnxruntime for every model."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxforge.passes.cleanup.constant_folding as cf
from onnxforge import modelio
from onnxforge.equivalence import assert_equivalent
from onnxforge.errors import UsageError
from onnxforge.ir import Model, Value, from_proto, to_proto, verify
from onnxforge.passes.cleanup.constant_folding import ConstantFolding, ConstantFoldingOptions
from onnxforge.passmanager import PassContext, PassResult, VerifyInstrument

F = TensorProto.FLOAT
I64 = TensorProto.INT64


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def init(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def vi(name: str, elem: int = F, shape=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def make(nodes, inputs, outputs, inits=(), opset: int = 17, ir_version: int = 8, value_info=(), functions=(),
         extra_opsets=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]],
        functions=list(functions),
    )
    m.ir_version = ir_version
    return m


def fold(proto: onnx.ModelProto, *, feeds=None, tol=(1e-6, 1e-6), **options) -> tuple[Model, PassResult, onnx.ModelProto]:
    """Load, fold, check IR invariants, the ONNX checker and onnxruntime equivalence."""
    model = modelio.load(proto).model
    ctx = PassContext(instruments=[VerifyInstrument()])
    result = ctx.run(ConstantFolding(**options), model)
    verify(model)
    after = to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    for f in feeds or [None]:
        assert_equivalent(proto, after, feeds=f, rtol=tol[0], atol=tol[1])
    return model, result, after


def ops(model: Model) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.walk())


def initializer(model: Model, name: str) -> np.ndarray:
    v = model.graph.initializers[name]
    assert v.is_constant()
    return v.array()


# --------------------------------------------------------------------------------------------
# what is folded
# --------------------------------------------------------------------------------------------
def test_folds_shape_arithmetic_chain_into_reshape_constant():
    proto = make(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
            helper.make_node("Unsqueeze", ["d0", "axes0"], ["d0u"]),
            helper.make_node("Concat", ["d0u", "minus1"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        [vi("x", F, [2, 3, 4])],
        [vi("y", F, [2, 12])],
        [init("zero", np.array(0, np.int64)), init("axes0", [0]), init("minus1", [-1])],
    )
    model, result, _ = fold(proto)
    assert result.modified
    assert ops(model) == Counter({"Reshape": 1})
    assert result.stats["folded_nodes"] == 4
    assert result.stats["folded_shape_queries"] == 1
    # zero, axes0, minus1 and the intermediate folded values s, d0, d0u are dead
    assert result.stats["removed_constants"] == 6
    (reshape,) = model.graph.nodes
    assert reshape.input(1).name == "target"  # folded values keep their names
    assert initializer(model, "target").tolist() == [2, -1]
    assert set(model.graph.initializers) == {"target"}


def test_graph_output_becomes_initializer_with_same_name_and_type():
    proto = make(
        [helper.make_node("Add", ["c1", "c2"], ["y"]), helper.make_node("Mul", ["x", "c1"], ["z"])],
        [vi("x", F, [3])],
        [vi("y", F, [3]), vi("z", F, [3])],
        [init("c1", np.array([1, 2, 3], np.float32)), init("c2", np.array([0.5, 0.5, 0.5], np.float32))],
    )
    model, result, after = fold(proto)
    assert result.stats["folded_nodes"] == 1 and result.stats["removed_constants"] == 1  # c2 only
    assert [o.name for o in after.graph.output] == ["y", "z"]
    assert after.graph.output[0] == proto.graph.output[0]  # name, type and shape unchanged
    assert initializer(model, "y").tolist() == [1.5, 2.5, 3.5]
    assert "c1" in model.graph.initializers and "c2" not in model.graph.initializers
    assert ops(model) == Counter({"Mul": 1})


def test_multi_output_split_and_constant_node_inputs():
    proto = make(
        [
            helper.make_node("Constant", [], ["data"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0]),
            helper.make_node("Constant", [], ["sizes"], value_ints=[2, 3]),
            helper.make_node("Split", ["data", "sizes"], ["a", "b"], axis=0),
            helper.make_node("ReduceSum", ["a"], ["sa"], keepdims=0),
            helper.make_node("Mul", ["x", "sa"], ["y"]),
            helper.make_node("Add", ["x", "b"], ["z"]),
        ],
        [vi("x", F, [3])],
        [vi("y", F, [3]), vi("z", F, [3])],
    )
    model, result, _ = fold(proto)
    assert ops(model) == Counter({"Mul": 1, "Add": 1})
    assert result.stats["folded_nodes"] == 2  # Split, ReduceSum
    assert result.stats["removed_constants"] == 3  # both Constant nodes and the folded "a"
    assert initializer(model, "b").tolist() == [3, 4, 5]
    assert float(initializer(model, "sa")) == 3.0
    assert "a" not in model.graph.initializers  # dead intermediate dropped


def test_causal_mask_and_rotary_tables():
    """Typical transformer preprocessing that exporters leave as constant subgraphs."""
    proto = make(
        [
            helper.make_node("Range", ["r0", "n", "r1"], ["pos"]),
            helper.make_node("Unsqueeze", ["pos", "ax0"], ["row"]),
            helper.make_node("Unsqueeze", ["pos", "ax1"], ["col"]),
            helper.make_node("Less", ["col", "row"], ["future"]),  # i < j
            helper.make_node("Where", ["future", "neg_inf", "zero_f"], ["mask"]),
            helper.make_node("Cast", ["pos"], ["posf"], to=F),
            helper.make_node("Unsqueeze", ["posf", "ax1"], ["posc"]),
            helper.make_node("Mul", ["posc", "inv_freq"], ["angles"]),
            helper.make_node("Sin", ["angles"], ["sin"]),
            helper.make_node("Cos", ["angles"], ["cos"]),
            helper.make_node("Add", ["scores", "mask"], ["masked"]),
            helper.make_node("Mul", ["q", "cos"], ["qc"]),
            helper.make_node("Mul", ["q", "sin"], ["qs"]),
            helper.make_node("Add", ["qc", "qs"], ["rot"]),
        ],
        [vi("scores", F, [8, 8]), vi("q", F, [8, 4])],
        [vi("masked", F, [8, 8]), vi("rot", F, [8, 4])],
        [
            init("r0", np.array(0, np.int64)), init("n", np.array(8, np.int64)), init("r1", np.array(1, np.int64)),
            init("ax0", [0]), init("ax1", [1]),
            init("neg_inf", np.array(-1e9, np.float32)), init("zero_f", np.array(0, np.float32)),
            init("inv_freq", (1.0 / 10000 ** (np.arange(4) / 4)).astype(np.float32)),
        ],
    )
    model, result, _ = fold(proto)
    assert ops(model) == Counter({"Add": 2, "Mul": 2})
    assert result.stats["folded_nodes"] == 10
    assert set(model.graph.initializers) == {"mask", "sin", "cos"}
    assert initializer(model, "mask")[0, 1] == np.float32(-1e9) and initializer(model, "mask")[1, 0] == 0


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_opset_specific_forms(opset):
    """Unsqueeze/ReduceSum/Split take axes as attributes or inputs depending on the opset."""
    if opset < 13:
        nodes = [
            helper.make_node("Unsqueeze", ["c"], ["u"], axes=[0]),
            helper.make_node("ReduceSum", ["u"], ["r"], axes=[1], keepdims=1),
            helper.make_node("Split", ["c"], ["s0", "s1"], axis=0, split=[1, 3]),
        ]
        inits = [init("c", np.arange(4, dtype=np.float32))]
    else:
        split = [helper.make_node("Split", ["c"], ["s0", "s1"], axis=0, num_outputs=2)] if opset >= 18 else [
            helper.make_node("Split", ["c", "sp"], ["s0", "s1"], axis=0)]
        nodes = [
            helper.make_node("Unsqueeze", ["c", "a0"], ["u"]),
            helper.make_node("ReduceSum", ["u", "a1"], ["r"], keepdims=1),
            *split,
        ]
        inits = [init("c", np.arange(4, dtype=np.float32)), init("a0", [0]), init("a1", [1]), init("sp", [1, 3])]
    nodes.append(helper.make_node("Sum", ["x", "r", "s1"] if opset < 18 else ["x", "r", "s0"], ["y"]))
    shape = [1, 3] if opset < 18 else [1, 2]
    proto = make(nodes, [vi("x", F, shape)], [vi("y", F, shape)], inits, opset=opset)
    model, result, _ = fold(proto)
    assert ops(model) == Counter({"Sum": 1})
    assert result.stats["folded_nodes"] == 3


def test_folds_inside_subgraphs_and_keeps_outer_captures():
    """Nodes inside If branches fold with outer constants; a folded outer value read by a branch
    stays readable; a branch output that folds becomes a branch initializer."""
    then_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["two"], value=init("two_t", np.array(2.0, np.float32))),
            helper.make_node("Mul", ["a", "two"], ["a2"]),
            helper.make_node("Add", ["a2", "x"], ["t_out"]),
        ],
        "then", [], [vi("t_out", F, [3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["s"], ["e_out"])], "else", [], [vi("e_out", F, [3])],
    )
    proto = make(
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        [vi("x", F, [3]), vi("cond", TensorProto.BOOL, [])],
        [vi("y", F, [3])],
        [init("a", np.array([1, 2, 3], np.float32)), init("b", np.array([10, 20, 30], np.float32))],
    )
    feeds = [{"x": np.ones(3, np.float32), "cond": np.array(c)} for c in (True, False)]
    model, result, _ = fold(proto, feeds=feeds)
    assert ops(model) == Counter({"If": 1, "Add": 1})  # outer Add, then-Mul and else-Neg folded
    assert result.stats["folded_nodes"] == 3
    # a and b were only read by folded nodes (one of them inside the then branch), s only by the
    # else branch's Neg; the branch's own Constant node died with its Mul.
    assert not model.graph.initializers
    assert result.stats["removed_constants"] == 4
    if_node = next(n for n in model.graph if n.op_type == "If")
    then_b, else_b = if_node.subgraphs["then_branch"], if_node.subgraphs["else_branch"]
    assert "a2" in then_b.initializers and len(then_b) == 1
    assert len(else_b) == 0 and else_b.outputs[0].name == "e_out" and "e_out" in else_b.initializers


def test_outer_constant_still_read_by_a_branch_is_kept():
    then_g = helper.make_graph([helper.make_node("Add", ["s", "x"], ["t_out"])], "then", [], [vi("t_out", F, [2])])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "s"], ["e_out"])], "else", [], [vi("e_out", F, [2])])
    proto = make(
        [helper.make_node("Mul", ["a", "a"], ["s"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [vi("x", F, [2]), vi("cond", TensorProto.BOOL, [])], [vi("y", F, [2])],
        [init("a", np.array([3, 4], np.float32))],
    )
    feeds = [{"x": np.ones(2, np.float32), "cond": np.array(c)} for c in (True, False)]
    model, result, _ = fold(proto, feeds=feeds)
    assert result.stats["folded_nodes"] == 1
    assert set(model.graph.initializers) == {"s"}  # captured by both branches
    assert initializer(model, "s").tolist() == [9, 16]
    assert len(model.graph.initializers["s"].uses()) == 2


def test_loop_and_scan_body_outputs_can_fold():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "k"], ["acc_out"]),
         helper.make_node("Neg", ["k"], ["scan_out"])],  # a body output computed from an outer constant
        "body", [vi("i", I64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc_in", F, [2])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", F, [2]), vi("scan_out", F, [2])],
    )
    sbody = helper.make_graph(
        [helper.make_node("Add", ["s_in", "s_x"], ["s_out"]), helper.make_node("Mul", ["k", "k"], ["s_scan"])],
        "sbody", [vi("s_in", F, [2]), vi("s_x", F, [2])], [vi("s_out", F, [2]), vi("s_scan", F, [2])],
    )
    proto = make(
        [helper.make_node("Loop", ["n", "c", "x"], ["acc", "scans"], body=body),
         helper.make_node("Scan", ["x", "seq"], ["sf", "sscan"], body=sbody, num_scan_inputs=1)],
        [vi("x", F, [2]), vi("n", I64, []), vi("c", TensorProto.BOOL, []), vi("seq", F, [3, 2])],
        [vi("acc", F, [2]), vi("scans", F, ["t", 2]), vi("sf", F, [2]), vi("sscan", F, [3, 2])],
        [init("k", np.array([1, 2], np.float32))],
    )
    feeds = [{"x": np.ones(2, np.float32), "n": np.array(3, np.int64), "c": np.array(True),
              "seq": np.ones((3, 2), np.float32)}]
    model, result, _ = fold(proto, feeds=feeds)
    assert result.stats["folded_nodes"] == 2
    assert ops(model) == Counter({"Loop": 1, "Scan": 1, "Identity": 1, "Add": 2})
    assert "k" in model.graph.initializers  # still read by the Loop body's Add


def test_ir_version_3_uses_constant_nodes_in_topological_order():
    proto = make(
        [
            helper.make_node("Constant", [], ["c1"], value=init("c1v", np.array([1, 2], np.float32))),
            helper.make_node("Constant", [], ["c2"], value=init("c2v", np.array([3, 4], np.float32))),
            helper.make_node("Add", ["c1", "c2"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["y"]),
        ],
        [vi("x", F, [2])], [vi("y", F, [2])], opset=7, ir_version=3,
    )
    model, result, after = fold(proto)
    assert not model.graph.initializers and not after.graph.initializer  # IR 3: no new initializers
    assert [n.op_type for n in model.graph] == ["Constant", "Mul"]
    const = model.graph.nodes[0]
    assert const.outputs[0].name == "s"
    assert ("onnxforge.rule", "constant-folding") in [(p.key, p.value) for p in const.metadata_props]
    assert result.stats == {**result.stats, "folded_nodes": 1, "removed_constants": 2}
    assert model.graph.is_topologically_sorted()


# --------------------------------------------------------------------------------------------
# what is not folded
# --------------------------------------------------------------------------------------------
def _assert_untouched(proto: onnx.ModelProto, **options) -> PassResult:
    model = modelio.load(proto).model
    before = Counter(n.op_type for n in model.graph.walk())
    version = model.version
    result = ConstantFolding(**options)(model)
    assert not result.modified
    assert model.version == version
    assert result.stats["folded_nodes"] == 0
    assert ops(model) == before
    return result


def test_nodes_with_runtime_inputs_are_not_folded():
    proto = make([helper.make_node("Add", ["x", "c"], ["y"])], [vi("x", F, [2])], [vi("y", F, [2])],
                 [init("c", np.ones(2, np.float32))])
    _assert_untouched(proto)


def test_overridable_initializers_are_not_constants():
    """An initializer listed as a graph input is a default the caller may replace."""
    proto = make(
        [helper.make_node("Add", ["w", "c"], ["y"]), helper.make_node("Shape", ["w"], ["s"])],
        [vi("w", F, ["n"])], [vi("y", F, ["n"]), vi("s", I64, [1])],
        [init("w", np.ones(2, np.float32)), init("c", np.ones(2, np.float32))],
    )
    _assert_untouched(proto)  # Shape(w): its declared shape is symbolic although the default's is [2]


def test_shape_of_overridable_initializer_uses_declared_input_shape():
    proto = make(
        [helper.make_node("Shape", ["w"], ["s"])],
        [vi("w", F, [3])], [vi("s", I64, [1])],
        [init("w", np.ones(3, np.float32))],
    )
    model, result, _ = fold(proto)
    assert result.stats["folded_shape_queries"] == 1
    assert initializer(model, "s").tolist() == [3]
    assert model.graph.inputs[0].name == "w"  # graph inputs never change


def test_shape_folding_needs_static_shapes_and_the_option():
    proto = make([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["x"], ["n"])],
                 [vi("x", F, [2, 5])], [vi("s", I64, [2]), vi("n", I64, [])])
    _assert_untouched(proto, fold_shapes=False)
    model, result, _ = fold(proto)
    assert result.stats["folded_shape_queries"] == 2 and not model.graph.nodes
    assert int(initializer(model, "n")) == 10

    symbolic = make([helper.make_node("Shape", ["x"], ["s"])], [vi("x", F, ["batch", 5])], [vi("s", I64, [2])])
    _assert_untouched(symbolic)


def test_shape_of_intermediate_value_with_declared_static_shape():
    proto = make(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
         helper.make_node("Reshape", ["r", "s"], ["y"])],
        [vi("x", F, [2, 3])], [vi("y", F, [2, 3])], value_info=[vi("r", F, [2, 3])],
    )
    model, result, _ = fold(proto)
    assert ops(model) == Counter({"Relu": 1, "Reshape": 1})
    assert result.stats["folded_shape_queries"] == 1 and initializer(model, "s").tolist() == [2, 3]


def test_custom_domains_functions_random_and_quantization_ops_are_left_alone():
    fn = helper.make_function("local", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    proto = make(
        [
            helper.make_node("Double", ["c"], ["d"], domain="local"),
            helper.make_node("RandomNormalLike", ["c"], ["r"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"]),
            helper.make_node("Sum", ["x", "d", "r", "dq"], ["y"]),
        ],
        [vi("x", F, [2])], [vi("y", F, [2])],
        [init("c", np.ones(2, np.float32)), init("q", np.array([1, 2], np.int8)),
         init("scale", np.array(0.5, np.float32)), init("zp", np.array(0, np.int8))],
        functions=[fn], extra_opsets=[("local", 1)],
    )
    _assert_untouched(proto)


def test_refused_evaluations_are_left_for_the_runtime():
    proto = make(
        [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Add", ["x", "q"], ["y"])],
        [vi("x", TensorProto.INT32, [2])], [vi("y", TensorProto.INT32, [2])],
        [init("a", np.array([4, 5], np.int32)), init("b", np.array([2, 0], np.int32))],
    )
    result = _assert_untouched(proto)
    assert result.stats["kernel_refusals"] == 1


def test_dead_nodes_are_not_evaluated():
    proto = make([helper.make_node("Add", ["c", "c"], ["unused"]), helper.make_node("Neg", ["x"], ["y"])],
                 [vi("x", F, [2])], [vi("y", F, [2])], [init("c", np.ones(2, np.float32))])
    _assert_untouched(proto)


def test_declared_type_mismatch_is_refused_with_a_warning(caplog):
    proto = make(
        [helper.make_node("Add", ["a", "a"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
        [vi("x", F, [2])], [vi("y", F, [2])], [init("a", np.ones(2, np.float32))],
        value_info=[vi("s", F, [3])],  # wrong static shape
    )
    model = from_proto(proto)
    with caplog.at_level(logging.WARNING, logger=cf.__name__):
        result = ConstantFolding()(model)
    assert not result.modified and result.stats["kernel_refusals"] == 1
    assert "declared with shape [3]" in caplog.text


# --------------------------------------------------------------------------------------------
# size limit
# --------------------------------------------------------------------------------------------
def _constant_of_shape_model(n: int) -> onnx.ModelProto:
    return make(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                          value=helper.make_tensor("v", F, [1], [1.0])),
         helper.make_node("Add", ["x", "big"], ["y"])],
        [vi("x", F, [n, n])], [vi("y", F, [n, n])], [init("shape", [n, n])],
    )


def test_size_limit_blocks_growth_and_can_be_raised():
    proto = _constant_of_shape_model(1024)  # 4 MiB of float32
    result = _assert_untouched(proto)
    assert result.stats["skipped_too_large"] == 1
    model, result, _ = fold(proto, size_limit=8 << 20)
    assert result.stats["folded_nodes"] == 1 and initializer(model, "big").shape == (1024, 1024)


def test_huge_outputs_are_refused_before_allocation():
    proto = make(
        [helper.make_node("Expand", ["one", "shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
        [vi("x", F, ["a", "b"])], [vi("y", F, ["a", "b"])],
        [init("one", np.ones(1, np.float32)), init("shape", [1 << 20, 1 << 20])],  # 4 TiB if computed
    )
    result = _assert_untouched(proto, size_limit=1 << 30)
    assert result.stats["skipped_too_large"] == 1


def test_large_single_use_weight_transpose_is_folded_but_shared_one_is_not():
    w = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)  # 2 MiB > default limit
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "Wt"], ["y"])]
    proto = make(nodes, [vi("x", F, [2, 1024])], [vi("y", F, [2, 512])], [init("W", w)])
    # Transpose folding is exact; onnxruntime prepacks initializer weights for MatMul, which
    # reorders its float accumulation (K = 1024), hence the tolerance.
    model, result, _ = fold(proto, tol=(1e-4, 1e-4))
    assert ops(model) == Counter({"MatMul": 1})
    assert set(model.graph.initializers) == {"Wt"} and result.stats["removed_constants"] == 1
    np.testing.assert_array_equal(initializer(model, "Wt"), w.T)

    shared = make(nodes + [helper.make_node("MatMul", ["z", "W"], ["u"])],
                  [vi("x", F, [2, 1024]), vi("z", F, [2, 512])], [vi("y", F, [2, 512]), vi("u", F, [2, 1024])],
                  [init("W", w)])
    result = _assert_untouched(shared)  # folding would store W twice
    assert result.stats["skipped_too_large"] == 1


# --------------------------------------------------------------------------------------------
# pass contract
# --------------------------------------------------------------------------------------------
def test_second_run_changes_nothing():
    proto = _constant_of_shape_model(4)
    model = modelio.load(proto).model
    assert ConstantFolding()(model).modified
    version = model.version
    again = ConstantFolding()(model)
    assert not again.modified and model.version == version and again.stats["folded_nodes"] == 0


def test_unmodified_model_for_plain_mlp():
    from builders import mlp

    _assert_untouched(mlp())


def test_worklist_is_linear_even_when_nodes_are_out_of_order(monkeypatch):
    n = 300
    nodes = [helper.make_node("Neg", [f"v{i}"], [f"v{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Add", ["x", f"v{n}"], ["y"]))
    proto = make(nodes, [vi("x", F, [4])], [vi("y", F, [4])], [init("v0", np.arange(4, dtype=np.float32))])
    model = modelio.load(proto).model
    g = model.graph
    g._nodes = dict.fromkeys(reversed(list(g._nodes)))  # worst case: consumers before producers
    calls = []
    real = cf.evaluate
    monkeypatch.setattr(cf, "evaluate", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    result = ConstantFolding()(model)
    assert len(calls) == n  # each node evaluated exactly once
    assert result.stats["folded_nodes"] == n and result.stats["removed_constants"] == n
    assert set(g.initializers) == {f"v{n}"}
    assert_equivalent(proto, to_proto(model))


def test_shared_constant_fan_out_is_not_rescanned_per_fold(monkeypatch):
    """A constant read by every node of a foldable chain must not cost its fan-out per fold."""
    n = 2000
    nodes = [helper.make_node("Add", [f"v{i}", "one"], [f"v{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Add", ["x", f"v{n}"], ["y"]))
    proto = make(nodes, [vi("x", I64, [2])], [vi("y", I64, [2])],
                 [init("v0", np.zeros(2, np.int64)), init("one", np.ones(2, np.int64))])
    model = modelio.load(proto).model
    listed = [0]
    real_uses = Value.uses

    def counting_uses(self):
        out = real_uses(self)
        listed[0] += len(out)
        return out

    monkeypatch.setattr(Value, "uses", counting_uses)
    result = ConstantFolding()(model)
    assert result.stats["folded_nodes"] == n
    assert listed[0] <= 4 * n  # quadratic behaviour would list ~n * n / 2 uses
    assert initializer(model, f"v{n}").tolist() == [n, n]


def test_options_are_validated():
    assert ConstantFolding.name == "constant-folding"
    assert ConstantFolding().options == ConstantFoldingOptions(size_limit=1 << 20, fold_shapes=True)
    with pytest.raises(UsageError):
        ConstantFolding(size_limit=-1)
    with pytest.raises(UsageError):
        ConstantFolding(size_limit=1.5)
    with pytest.raises(UsageError):
        ConstantFolding(bogus=1)
