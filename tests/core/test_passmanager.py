"""Pass infrastructure: options, results, composition, fixed point, errors, instruments, analyses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from builders import mlp

from onnxforge import modelio
from onnxforge.errors import PassError, UsageError
from onnxforge.ir import Model, bypass
from onnxforge.passmanager import (
    Analysis,
    AnalysisManager,
    DumpInstrument,
    FixedPoint,
    Pass,
    PassContext,
    PassOptions,
    PassResult,
    Sequential,
    TimingInstrument,
    VerifyInstrument,
)


class DropOneIdentity(Pass):
    """Removes at most one Identity per run, so a fixed point needs several rounds."""

    name = "drop-one-identity"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        for n in model.graph:
            if n.op_type == "Identity" and not n.outputs[0].is_graph_output():
                bypass(n)
                return PassResult(True, {"removed": 1})
        return PassResult(False)


class Boom(Pass):
    name = "boom"

    def run(self, model, ctx):  # noqa: ANN001
        raise RuntimeError("kaput")


class Liar(Pass):
    name = "liar"

    def run(self, model, ctx):  # noqa: ANN001
        model.graph.add_node("Neg", [model.graph.inputs[0]])
        return PassResult(False)


@dataclass(frozen=True)
class ThresholdOptions(PassOptions):
    threshold: int = 3

    def validate(self) -> None:
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")


class WithOptions(Pass):
    name = "with-options"
    Options = ThresholdOptions

    def run(self, model, ctx):  # noqa: ANN001
        return PassResult(False)


def _chain_of_identities(n: int) -> Model:
    m = mlp()
    from onnx import helper

    relu = m.graph.node[2]
    relu.output[0] = "i0"
    for i in range(n):
        m.graph.node.insert(3 + i, helper.make_node("Identity", [f"i{i}"], [f"i{i + 1}"], name=f"extra{i}"))
    m.graph.node[-1].input[0] = f"i{n}"
    return modelio.load(m).model


def test_fixed_point_iterates_until_nothing_changes():
    model = _chain_of_identities(4)
    fp = FixedPoint([DropOneIdentity()], max_iterations=10)
    timing = TimingInstrument()
    r = PassContext(instruments=[timing, VerifyInstrument()]).run(fp, model)
    assert r.modified and fp.iterations == 5  # 4 removals, then one quiet round
    assert timing.per_pass["drop-one-identity"].runs == 5
    assert timing.per_pass["drop-one-identity"].stats["removed"] == 4
    assert [n.op_type for n in model.graph].count("Identity") == 1  # the one naming the graph output
    assert not fp(model).modified


def test_fixed_point_respects_max_iterations():
    model = _chain_of_identities(4)
    fp = FixedPoint([DropOneIdentity()], max_iterations=2)
    fp(model)
    assert fp.iterations == 2
    assert [n.op_type for n in model.graph].count("Identity") == 3


def test_errors_name_the_pass_and_its_predecessors():
    model = _chain_of_identities(1)
    with pytest.raises(PassError) as info:
        Sequential([DropOneIdentity(), Boom()])(model)
    msg = str(info.value)
    assert "'boom'" in msg and "kaput" in msg and "drop-one-identity" in msg
    assert info.value.ran_before == ["drop-one-identity"]


def test_a_pass_that_hides_its_changes_is_caught():
    with pytest.raises(PassError, match="modified=False"):
        Liar()(modelio.load(mlp()).model)


def test_options_are_typed_and_validated():
    assert WithOptions(threshold=5).options.threshold == 5
    with pytest.raises(UsageError, match="unknown option"):
        WithOptions(treshold=5)
    with pytest.raises(UsageError, match="threshold must be"):
        WithOptions(threshold=-1)
    assert ("threshold", "int", 3) in ThresholdOptions.describe()


def test_disabled_passes_do_not_run():
    model = _chain_of_identities(2)
    r = PassContext(disabled={"drop-one-identity"}).run(DropOneIdentity(), model)
    assert not r.modified


def test_dump_instrument_writes_a_model_per_changing_pass(tmp_path):
    model = _chain_of_identities(2)
    PassContext(instruments=[DumpInstrument(tmp_path)]).run(FixedPoint([DropOneIdentity()]), model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_drop-one-identity.onnx", "002_drop-one-identity.onnx"]


class CountNodes(Analysis):
    name = "count-nodes"
    calls = 0

    def compute(self, model, am):  # noqa: ANN001
        CountNodes.calls += 1
        return len(model.graph)


class PreservingNoop(Pass):
    name = "preserving"

    def run(self, model, ctx):  # noqa: ANN001
        model.graph.nodes[0].set_attr("tag", 1)  # a change that keeps the node count
        return PassResult(True, preserved=frozenset({CountNodes}))


def test_analysis_cache_is_invalidated_by_mutation_unless_preserved():
    model = _chain_of_identities(2)
    am = AnalysisManager()
    ctx = PassContext(analyses=am)
    CountNodes.calls = 0
    n0 = am.get(CountNodes, model)
    assert am.get(CountNodes, model) == n0 and CountNodes.calls == 1
    ctx.run(PreservingNoop(), model)
    assert am.get(CountNodes, model) == n0 and CountNodes.calls == 1
    ctx.run(DropOneIdentity(), model)
    assert am.get(CountNodes, model) == n0 - 1 and CountNodes.calls == 2
