"""The rule engine (onnxforge.rules): a rewrite builds its replacement without touching the graph,
and the engine checks it and applies it in one step, or leaves the graph as it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_helpers import apply, make_model, rule_pass, vi

from onnxforge import modelio
from onnxforge.errors import PassError
from onnxforge.ir import PROVENANCE_KEY, Model, Node, Value, to_proto
from onnxforge.passes.fusion.matching import np_dtype, require_float
from onnxforge.passmanager import PassContext
from onnxforge.rules import (
    Match,
    MatchFailed,
    Replacement,
    RewriteBuilder,
    RewriteContext,
    RewriteError,
    Rule,
    fail,
    rule_trace,
)

F = TensorProto.FLOAT


# -- the example rule of docs/FUSION.md ------------------------------------------------------------


@dataclass
class DoubleMatch(Match):
    x: Value
    dtype: np.dtype


class AddSelfToMul(Rule[DoubleMatch]):
    """``x + x`` → ``x * 2``."""

    name = "add-self-to-mul"
    summary = "Turn x + x into x * 2."
    anchors: ClassVar[tuple[str, ...]] = ("Add",)

    def match(self, node: Node, rc: RewriteContext) -> DoubleMatch:
        x = node.input(0)
        if x is None or node.input(1) is not x:
            fail("the Add does not add a value to itself")
        et = require_float(x, "Add input")
        return DoubleMatch(node, [node], x, np_dtype(et))

    def rewrite(self, m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
        two = rb.constant(np.array(2, dtype=m.dtype), "two")
        return Replacement.outputs(m.anchor, rb.op("Mul", [m.x, two], name=m.anchor.name))


def doubling_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Add", ["x", "x"], ["d"], name="double"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
        helper.make_node("Add", ["x", "y"], ["z"], name="residual"),
    ]
    return make_model(nodes, [vi("x", F, [2, 3])], [vi("z", F, [2, 3])])


def snapshot(model: Model) -> bytes:
    return to_proto(model).SerializeToString(deterministic=True)


def test_example_rule_fires_with_provenance_and_says_why_not_elsewhere() -> None:
    done = apply(doubling_model(), rule_pass(AddSelfToMul()))
    assert sorted(n.op_type for n in done.after.graph.node) == ["Add", "Mul", "Relu"]
    mul = next(n for n in done.after.graph.node if n.op_type == "Mul")
    assert mul.name.startswith("double")  # the anchor still holds its name while the new node is named
    assert {p.key: p.value for p in mul.metadata_props} == {PROVENANCE_KEY: "add-self-to-mul"}
    assert done.stats == {"add-self-to-mul": 1}
    model = modelio.load(doubling_model()).model
    ctx = PassContext()
    ctx.run(rule_pass(AddSelfToMul()), model)
    assert rule_trace(ctx).explain("residual") == [
        "add-self-to-mul: did not fire: the Add does not add a value to itself"
    ]
    assert rule_trace(ctx).explain("double") == ["add-self-to-mul: fired"]


def test_a_replaced_graph_output_keeps_its_name_and_type() -> None:
    m = make_model(
        [helper.make_node("Add", ["x", "x"], ["y"], name="double")],
        [vi("x", F, [2, 3])],
        [vi("y", F, [2, 3])],
    )
    done = apply(m, rule_pass(AddSelfToMul()))
    assert [o.name for o in done.after.graph.output] == ["y"]
    assert done.after.graph.output[0].type == m.graph.output[0].type
    assert [n.op_type for n in done.after.graph.node] == ["Mul"]


def test_rules_apply_inside_subgraphs_reading_outer_values() -> None:
    then = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["t"], name="inner_double")], "then", [], [vi("t", F, [2, 3])]
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", F, [2, 3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="if")]
    m = make_model(nodes, [vi("c", TensorProto.BOOL, []), vi("x", F, [2, 3])], [vi("y", F, [2, 3])])
    done = apply(m, rule_pass(AddSelfToMul()), feeds={"c": np.array(True), "x": np.ones((2, 3), np.float32)})
    body = next(a.g for a in done.after.graph.node[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in body.node] == ["Mul"] and [o.name for o in body.output] == ["t"]


# -- a rewrite that fails leaves nothing behind ------------------------------------------------------


class _Scripted(Rule[DoubleMatch]):
    """AddSelfToMul's match, with a rewrite given by ``build``."""

    name = "scripted"
    anchors: ClassVar[tuple[str, ...]] = ("Add",)

    def __init__(self, build: Any) -> None:
        self.build = build

    def match(self, node: Node, rc: RewriteContext) -> DoubleMatch:
        return AddSelfToMul().match(node, rc)

    def rewrite(self, m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
        result: Replacement = self.build(m, rb)
        return result


def _load() -> tuple[Model, bytes, int]:
    model = modelio.load(doubling_model()).model
    return model, snapshot(model), model.version


def test_a_rewrite_that_raises_leaves_the_graph_untouched() -> None:
    def build(m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
        rb.constant(np.ones(3, np.float32), "junk")
        rb.op("Neg", [m.x], domain="com.example")
        raise ZeroDivisionError("bug in the rule")

    rule = _Scripted(build)
    model, before, version = _load()
    with pytest.raises(PassError, match="bug in the rule"):
        PassContext().run(rule_pass(rule), model)
    assert model.version == version and snapshot(model) == before
    assert "com.example" not in model.opset_imports


def test_a_rewrite_may_still_refuse_with_a_reason() -> None:
    def build(m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
        rb.op("Neg", [m.x])
        raise MatchFailed("the rewrite changed its mind")

    rule = _Scripted(build)
    model, before, version = _load()
    ctx = PassContext()
    assert not ctx.run(rule_pass(rule), model).modified
    assert model.version == version and snapshot(model) == before
    assert rule_trace(ctx).misses["double"]["scripted"] == "the rewrite changed its mind"


def _relu(m: DoubleMatch) -> Node:
    """The Relu that reads the matched Add."""
    out = m.anchor.output(0)
    assert out is not None
    return out.consumers()[0]


def _relu_out(m: DoubleMatch) -> Value:
    out = _relu(m).output(0)
    assert out is not None
    return out


def _reads_removed(m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
    m.nodes.append(_relu(m))  # the Relu is matched too: its output goes away
    return Replacement.outputs(m.anchor, rb.op("Neg", [_relu_out(m)]))


BAD_REPLACEMENTS = {
    "leaves 'd' in use": lambda m, rb: Replacement({}),
    "reads 'd', which the rewrite replaces": lambda m, rb: Replacement.outputs(
        m.anchor, rb.op("Neg", [m.anchor.output(0)])
    ),
    "reads 'y', computed by a matched node that the rewrite removes": _reads_removed,
    "reads 'stray', which is not in scope": lambda m, rb: Replacement.outputs(
        m.anchor, rb.op("Neg", [Value("stray")])
    ),
    "replaces 'x', which no node of this graph computes": lambda m, rb: Replacement(
        {m.x: rb.constant(np.zeros((2, 3), np.float32), "zeros")}
    ),
    "'y' is both replaced and a replacement": lambda m, rb: Replacement.outputs(m.anchor, _relu_out(m)).also(
        _relu_out(m), m.x
    ),
}


@pytest.mark.parametrize("why", sorted(BAD_REPLACEMENTS))
def test_a_replacement_the_engine_cannot_apply_is_refused_before_any_change(why: str) -> None:
    rule = _Scripted(BAD_REPLACEMENTS[why])
    model, before, version = _load()
    with pytest.raises(PassError) as info:
        PassContext().run(rule_pass(rule), model)
    assert isinstance(info.value.__cause__, RewriteError) and why in str(info.value.__cause__)
    assert model.version == version and snapshot(model) == before


def test_a_match_that_edits_the_graph_is_an_error() -> None:
    class Meddling(AddSelfToMul):
        name = "meddling"

        def match(self, node: Node, rc: RewriteContext) -> DoubleMatch:
            node.set_attr("meddled", 1)
            return super().match(node, rc)

    with pytest.raises(PassError) as info:
        PassContext().run(rule_pass(Meddling()), modelio.load(doubling_model()).model)
    assert isinstance(info.value.__cause__, RewriteError) and "changed the graph" in str(info.value.__cause__)


def test_omitted_outputs_and_other_replaced_values() -> None:
    """A node with omitted optional outputs, replacing a value outside the match too."""

    def build(m: DoubleMatch, rb: RewriteBuilder) -> Replacement:
        relu = _relu_out(m)
        first, skipped, second = rb.op_outputs(
            "Split", [m.x], 3, keep=(0, 2), attrs={"axis": 1}, name="split"
        )
        assert skipped is None and first is not None and second is not None
        doubled = rb.op("Mul", [m.x, rb.constant(np.array(2, np.float32), "two")])
        return Replacement.outputs(m.anchor, doubled).also(relu, rb.op("Relu", [doubled]))

    model = modelio.load(doubling_model()).model
    PassContext().run(rule_pass(_Scripted(build)), model)
    split = next(n for n in model.graph if n.op_type == "Split")
    assert [o is None for o in split.outputs] == [False, True, False]
    assert [o.name for o in split.outputs if o is not None] == ["split_out0", "split_out2"]
    relus = [n for n in model.graph if n.op_type == "Relu"]
    residual = next(n for n in model.graph if n.name == "residual")
    new_relu = next(n for n in relus if n.metadata_props)
    assert residual.input(1) is new_relu.output(0)
