"""No-op elimination."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from pass_helpers import apply, const, make_model, op_counts, ops, subgraph, vi

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner
from onnxforge.passes import NoOpElimination

I64 = TensorProto.INT64


def _run_twice(m, **opts):
    a = apply(m, NoOpElimination(**opts))
    again = NoOpElimination(**opts)(a.model)
    assert again.modified is False, "a second run must find nothing left to do"
    return a


def test_identity_chain_in_the_middle_is_removed():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Identity", ["r"], ["i1"]),
        helper.make_node("Identity", ["i1"], ["i2"]),
        helper.make_node("Neg", ["i2"], ["y"]),
    ]
    a = _run_twice(make_model(nodes, [vi("x", shape=[2, 3])], [vi("y", shape=[2, 3])]))
    assert a.result.modified is True
    assert ops(a.after) == ["Relu", "Neg"]
    assert a.stats == {"removed_nodes": 2, "removed_identity": 2}


def test_graph_output_produced_by_a_removable_node_keeps_its_name():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])]
    a = _run_twice(make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])]))
    assert ops(a.after) == ["Relu"]
    assert a.after.graph.node[0].output[0] == "y"
    assert a.after.graph.output == a.before.graph.output


def test_identity_from_graph_input_to_graph_output_stays():
    m = make_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", shape=[2])], [vi("y", shape=[2])])
    a = apply(m, NoOpElimination())
    assert a.result.modified is False
    assert ops(a.after) == ["Identity"]


def test_identities_keeping_two_outputs_distinct_stay():
    nodes = [
        helper.make_node("Relu", ["x"], ["y1"]),
        helper.make_node("Identity", ["y1"], ["y2"]),  # input is another graph output
        helper.make_node("Identity", ["w"], ["y3"]),  # input is an initializer
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[2])],
        [vi("y1", shape=[2]), vi("y2", shape=[2]), vi("y3", shape=[2])],
        [const("w", [1.0, 2.0])],
    )
    a = apply(m, NoOpElimination())
    assert a.result.modified is False
    assert ops(a.after) == ["Relu", "Identity", "Identity"]


def test_noop_between_graph_input_and_output_becomes_one_identity_and_converges():
    m = make_model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [vi("x", shape=[2])], [vi("y", shape=[2])]
    )
    a = _run_twice(m)
    assert ops(a.after) == ["Identity"]
    assert a.stats["removed_cast"] == 1
    assert [o.name for o in a.after.graph.output] == ["y"]


def test_add_zero_rules_respect_broadcasting_and_commutativity():
    nodes = [
        helper.make_node("Add", ["x", "zeros_row"], ["a1"]),  # [2,3] + [3]: no-op
        helper.make_node("Add", ["zero", "a1"], ["a2"]),  # 0 + x: no-op
        helper.make_node("Add", ["a2", "zeros_big"], ["a3"]),  # [2,3] + [4,2,3]: broadcasts, stays
        helper.make_node("Sub", ["a3", "zero"], ["a4"]),  # x - 0: no-op
        helper.make_node("Sub", ["zero", "a4"], ["a5"]),  # 0 - x: negation, stays
        helper.make_node("Mul", ["ones", "a5"], ["a6"]),  # 1 * x: no-op
        helper.make_node("Div", ["a6", "one"], ["a7"]),  # x / 1: no-op
        helper.make_node("Div", ["one", "a7"], ["a8"]),  # 1 / x: stays
        helper.make_node("Mul", ["a8", "half"], ["y"]),  # x * 0.5: stays
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[2, 3])],
        [vi("y", shape=[4, 2, 3])],
        [
            const("zeros_row", np.zeros(3)),
            const("zero", 0.0),
            const("zeros_big", np.zeros((4, 2, 3))),
            const("ones", np.ones((2, 3))),
            const("one", [1.0]),
            const("half", 0.5),
        ],
        value_info=[vi(n, shape=[2, 3]) for n in ("a1", "a2")] + [vi(f"a{i}", shape=[4, 2, 3]) for i in range(3, 9)],
    )
    a = _run_twice(m)
    assert ops(a.after) == ["Add", "Sub", "Div", "Mul"]
    assert a.stats["removed_add"] == 2 and a.stats["removed_sub"] == 1
    assert a.stats["removed_mul"] == 1 and a.stats["removed_div"] == 1


def test_add_zero_that_broadcasts_to_a_bigger_shape_stays():
    m = make_model(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        [vi("x", shape=[3])],
        [vi("y", shape=[2, 3])],
        [const("z", np.zeros((2, 3)))],
    )
    a = apply(m, NoOpElimination())
    assert a.result.modified is False
    assert ops(a.after) == ["Add"]


def test_add_zero_needs_a_known_rank_but_not_static_dims():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Add", ["r", "z"], ["h"]),
        helper.make_node("Neg", ["h"], ["y"]),
    ]
    inits = [const("z", np.zeros((1, 1)))]
    symbolic = make_model(
        nodes, [vi("x", shape=["N", 3])], [vi("y", shape=["N", 3])], inits, value_info=[vi("r", shape=["N", 3])]
    )
    a = apply(symbolic, NoOpElimination())
    assert ops(a.after) == ["Relu", "Neg"]
    unknown_rank = make_model(nodes, [vi("x", shape=["N", 3])], [vi("y", shape=["N", 3])], inits)
    b = apply(unknown_rank, NoOpElimination())
    assert b.result.modified is False


def test_signed_zero_option_keeps_only_exact_additions():
    nodes = [
        helper.make_node("Add", ["x", "pz"], ["a"]),  # -0.0 + 0.0 = +0.0: not exact
        helper.make_node("Add", ["a", "nz"], ["b"]),  # x + (-0.0): exact
        helper.make_node("Sub", ["b", "pz"], ["c"]),  # x - (+0.0): exact
        helper.make_node("Sub", ["c", "nz"], ["y"]),  # x - (-0.0) = x + 0.0: not exact
    ]
    m = make_model(
        nodes,
        [vi("x", shape=[2])],
        [vi("y", shape=[2])],
        [const("pz", 0.0), const("nz", -0.0)],
        value_info=[vi(n, shape=[2]) for n in "abc"],
    )
    feeds = {"x": np.array([-0.0, 1.5], np.float32)}
    strict = _run_twice(m, preserve_signed_zero=True)
    assert ops(strict.after) == ["Add", "Sub"]
    runner = OrtRunner()
    ref = runner.run(m, feeds)["y"]
    got = runner.run(strict.after, feeds)["y"]
    assert np.array_equal(np.signbit(ref), np.signbit(got)) and np.array_equal(ref, got)
    default = _run_twice(m)
    assert default.stats["removed_nodes"] == 4
    # The documented difference: -0.0 + 0.0 is +0.0, the input itself is -0.0.
    assert not np.signbit(ref[0]) and np.signbit(runner.run(default.after, feeds)["y"][0])


def test_integer_add_zero_is_exact_even_with_the_option():
    m = make_model(
        [helper.make_node("Add", ["x", "z"], ["h"]), helper.make_node("Neg", ["h"], ["y"])],
        [vi("x", I64, [3])],
        [vi("y", I64, [3])],
        [const("z", 0, np.int64)],
    )
    a = _run_twice(m, preserve_signed_zero=True)
    assert ops(a.after) == ["Neg"]


def _dropout_model(opset: int, training: bool | None, mask_used: bool = False, ratio: float = 0.5):
    ins = ["x"]
    inits = []
    if training is not None:
        ins += ["ratio", "train"]
        inits += [const("ratio", ratio), const("train", training, np.bool_)]
    outs = ["d", "mask"] if mask_used else ["d"]
    nodes = [helper.make_node("Dropout", ins, outs), helper.make_node("Relu", ["d"], ["y"])]
    outputs = [vi("y", shape=[2, 3])]
    if mask_used:
        outputs.append(vi("mask", TensorProto.BOOL, [2, 3]))
    return make_model(nodes, [vi("x", shape=[2, 3])], outputs, inits, opset=opset)


def test_dropout_in_inference_is_removed():
    for m in (_dropout_model(17, None), _dropout_model(17, False), _dropout_model(11, None)):
        a = _run_twice(m)
        assert ops(a.after) == ["Relu"]
        assert a.stats["removed_dropout"] == 1
        if a.after.graph.initializer:
            assert {t.name for t in a.after.graph.initializer} == {"ratio", "train"}  # DCE's job


def test_dropout_in_training_or_with_used_mask_stays():
    train = apply(_dropout_model(17, True, ratio=0.0), NoOpElimination())  # ratio 0: deterministic
    assert train.result.modified is False
    mask = apply(_dropout_model(17, None, mask_used=True), NoOpElimination())
    assert mask.result.modified is False


def test_cast_and_castlike_to_the_same_type():
    nodes = [
        helper.make_node("Cast", ["x"], ["c1"], to=TensorProto.FLOAT),  # no-op
        helper.make_node("CastLike", ["c1", "like_f"], ["c2"]),  # no-op
        helper.make_node("Cast", ["c2"], ["c3"], to=TensorProto.DOUBLE),  # real
        helper.make_node("CastLike", ["c3", "like_f"], ["y"]),  # real
    ]
    m = make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])], [const("like_f", [0.0])])
    a = _run_twice(m)
    assert ops(a.after) == ["Cast", "CastLike"]
    assert a.stats["removed_cast"] == 1 and a.stats["removed_castlike"] == 1


def test_cast_of_an_untyped_value_stays():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    m = make_model(nodes, [vi("x", shape=[3])], [vi("y", shape=[3])])  # r has no value_info
    assert apply(m, NoOpElimination()).result.modified is False


def _shape_op_model(op: str, const_inputs: dict[str, np.ndarray], in_shape, out_shape, opset=17, **attrs):
    inits = [const(name, arr, arr.dtype) for name, arr in const_inputs.items()]
    nodes = [
        helper.make_node(op, ["x", *const_inputs], ["h"], **attrs),
        helper.make_node("Neg", ["h"], ["y"]),
    ]
    return make_model(nodes, [vi("x", shape=in_shape)], [vi("y", shape=out_shape)], inits, opset=opset)


A = np.array


@pytest.mark.parametrize(
    "op, consts, in_shape, out_shape, attrs, removed",
    [
        ("Reshape", {"s": A([2, 3, 4])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Reshape", {"s": A([0, -1, 4])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Reshape", {"s": A([0, 0, 0])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Reshape", {"s": A([2, 12])}, [2, 3, 4], [2, 12], {}, False),
        ("Reshape", {"s": A([2, -1, 4])}, [2, 0, 4], [2, 0, 4], {}, True),  # -1 can only be 0
        ("Reshape", {"s": A([2, 0, 4])}, [2, 0, 4], [2, 0, 4], {"allowzero": 1}, True),
        ("Expand", {"s": A([1, 3, 1])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Expand", {"s": A([4])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Expand", {"s": A([2, 2, 3, 4])}, [2, 3, 4], [2, 2, 3, 4], {}, False),
        ("Transpose", {}, [2, 3, 4], [2, 3, 4], {"perm": [0, 1, 2]}, True),
        ("Transpose", {}, [2, 3, 4], [2, 4, 3], {"perm": [0, 2, 1]}, False),
        ("Transpose", {}, [5], [5], {}, True),
        ("Slice", {"st": A([0, 0]), "en": A([2**63 - 1, 3])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Slice", {"st": A([-4]), "en": A([100]), "ax": A([-1])}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Slice", {"st": A([1]), "en": A([3]), "ax": A([1])}, [2, 3, 4], [2, 2, 4], {}, False),
        ("Slice", {"st": A([-1]), "en": A([-(2**63)]), "ax": A([0]), "sp": A([-1])}, [2, 3, 4], [2, 3, 4], {}, False),
        ("Pad", {"p": A([0, 0, 0, 0, 0, 0])}, [2, 3, 4], [2, 3, 4], {"mode": "reflect"}, True),
        ("Pad", {"p": A([0, 1, 0, 0, 0, 0])}, [2, 3, 4], [2, 4, 4], {}, False),
        ("Squeeze", {}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Squeeze", {"ax": np.zeros(0, np.int64)}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Squeeze", {}, [2, 1, 4], [2, 4], {}, False),
        ("Unsqueeze", {"ax": np.zeros(0, np.int64)}, [2, 3, 4], [2, 3, 4], {}, True),
        ("Unsqueeze", {"ax": A([0])}, [2, 3, 4], [1, 2, 3, 4], {}, False),
    ],
)
def test_shape_ops(op, consts, in_shape, out_shape, attrs, removed):
    consts = {k: v.astype(np.int64) for k, v in consts.items()}
    a = _run_twice(_shape_op_model(op, consts, in_shape, out_shape, **attrs))
    assert a.result.modified is removed
    assert ops(a.after) == (["Neg"] if removed else [op, "Neg"])


def test_reshape_with_ambiguous_minus_one_stays():
    # 0 copies a zero-sized dim, so -1 could be anything (onnxruntime rejects the model).
    m = _shape_op_model("Reshape", {"s": A([0, -1, 4])}, [0, 3, 4], [0, 3, 4])
    assert apply(m, NoOpElimination(), equivalent=False).result.modified is False


def test_old_opset_attribute_forms():
    nodes = [
        helper.make_node("Slice", ["x"], ["a"], starts=[0], ends=[10], axes=[1]),
        helper.make_node("Pad", ["a"], ["b"], pads=[0, 0, 0, 0]),
        helper.make_node("Unsqueeze", ["b"], ["c"], axes=[0]),  # real
        helper.make_node("Squeeze", ["c"], ["y"], axes=[0]),  # real
    ]
    m = make_model(nodes, [vi("x", shape=[2, 3])], [vi("y", shape=[2, 3])], opset=9)
    a = _run_twice(m)
    assert ops(a.after) == ["Unsqueeze", "Squeeze"]


def test_concat_of_one_input():
    nodes = [helper.make_node("Concat", ["x"], ["c"], axis=0), helper.make_node("Neg", ["c"], ["y"])]
    a = _run_twice(make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])]))
    assert ops(a.after) == ["Neg"]


def test_identity_inside_a_subgraph():
    then_g = helper.make_graph(
        [
            helper.make_node("Neg", ["s"], ["t1"]),
            helper.make_node("Identity", ["t1"], ["t2"]),  # removable
            helper.make_node("Identity", ["t2"], ["t_out"]),  # output: renames t1
        ],
        "then",
        [],
        [vi("t_out", shape=[3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["e_out"])],  # outer value -> branch output: stays
        "else",
        [],
        [vi("e_out", shape=[3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["s"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    m = make_model(nodes, [vi("x", shape=[3]), vi("c", TensorProto.BOOL, [])], [vi("y", shape=[3])])
    for c in (True, False):
        a = apply(m, NoOpElimination(), feeds={"x": np.array([1, -2, 3], np.float32), "c": np.array(c)})
        assert ops(subgraph(a.after, "If", "then_branch")) == ["Neg"]
        assert ops(subgraph(a.after, "If", "else_branch")) == ["Identity"]
        assert a.stats["removed_identity"] == 2
        assert NoOpElimination()(a.model).modified is False


def test_custom_domain_identity_is_untouched():
    nodes = [helper.make_node("Identity", ["x"], ["h"], domain="my.custom"), helper.make_node("Relu", ["h"], ["y"])]
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])], domains=[("my.custom", 1)])
    a = apply(m, NoOpElimination(), equivalent=False)
    assert a.result.modified is False


def test_removed_value_type_moves_to_the_surviving_value():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Cast", ["i"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Neg", ["c"], ["y"]),
    ]
    # Only the Identity's output is typed: the Cast becomes removable once r carries that type.
    m = make_model(nodes, [vi("x", shape=[2])], [vi("y", shape=[2])], value_info=[vi("i", shape=[2])])
    a = _run_twice(m)
    assert op_counts(a.after) == {"Relu": 1, "Neg": 1}


def test_options_are_validated_by_name():
    from onnxforge.errors import UsageError

    with pytest.raises(UsageError):
        NoOpElimination(keep_signed_zero=True)
    model = modelio.load(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", shape=[1])], [vi("y", shape=[1])])).model
    assert NoOpElimination(preserve_signed_zero=True)(model).modified is False
