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
    PassManager,
    PassOptions,
    PassResult,
    Sequential,
    TimingInstrument,
    VerifyInstrument,
)


class DropOneIdentity(Pass):
    """Removes at most one Identity per run, so a fixed point needs several rounds."""

    name = "drop-one-identity"
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        for n in model.graph:
            if n.op_type == "Identity" and not n.outputs[0].is_graph_output():
                bypass(n)
                return PassResult(True, {"removed": 1})
        return PassResult(False)


class Boom(Pass):
    name = "boom"
    lossless = True

    def run(self, model, ctx):  # noqa: ANN001
        raise RuntimeError("kaput")


class Liar(Pass):
    name = "liar"
    lossless = True

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
    lossless = True
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
    lossless = True

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


# -- the pass contract ---------------------------------------------------------------------------


def test_a_pass_must_declare_whether_it_is_lossless():
    class Undeclared(Pass):
        name = "undeclared"

        def run(self, model, ctx):  # noqa: ANN001
            return PassResult(False)

    with pytest.raises(TypeError, match="must declare lossless"):
        Undeclared()


def test_requires_and_ensures_run_around_the_pass_with_context():
    calls: list[str] = []

    class Checked(Pass):
        name = "checked"
        lossless = True

        def requires(self, model, ctx):  # noqa: ANN001
            calls.append("requires")

        def run(self, model, ctx):  # noqa: ANN001
            calls.append("run")
            return PassResult(False)

        def ensures(self, model, ctx):  # noqa: ANN001
            calls.append("ensures")
            raise ValueError("postcondition broken")

    with pytest.raises(PassError, match="checked.*postcondition broken"):
        Checked()(_chain_of_identities(1))
    assert calls == ["requires", "run", "ensures"]


def test_functional_pass_returns_a_new_model_and_leaves_its_input():
    class Rebuild(Pass):
        name = "rebuild"
        lossless = True
        in_place = False

        def run(self, model, ctx):  # noqa: ANN001
            twin = model.clone()
            twin.opset_imports["com.example"] = 1
            return PassResult(True, model=twin)

    m = _chain_of_identities(2)
    v, n = m.version, len(m.graph.nodes)
    result, _ = PassManager([Rebuild(), DropOneIdentity()]).run(m)
    out = result.output(m)
    assert out is not m and m.version == v and "com.example" not in m.opset_imports and len(m.graph.nodes) == n
    assert "com.example" in out.opset_imports and len(out.graph.nodes) == n - 1


def test_in_place_contract_violations_are_errors():
    class Swapper(Pass):
        name = "swapper"
        lossless = True

        def run(self, model, ctx):  # noqa: ANN001
            return PassResult(True, model=model.clone())

    class Meddler(Pass):
        name = "meddler"
        lossless = True
        in_place = False

        def run(self, model, ctx):  # noqa: ANN001
            model.opset_imports["com.example"] = 1
            return PassResult(True, model=model.clone())

    with pytest.raises(PassError, match="in-place pass but returned a different model"):
        Swapper()(_chain_of_identities(1))
    with pytest.raises(PassError, match="functional pass but changed the model"):
        Meddler()(_chain_of_identities(1))


def test_options_parse_from_strings_by_their_declared_types():
    @dataclass(frozen=True)
    class Opts(PassOptions):
        limit: int = 4
        ratio: float = 0.5
        on: bool = False
        names: tuple[str, ...] = ()
        cap: int | None = None

    assert Opts.from_strings({"limit": "7", "ratio": "0.25", "on": "yes", "names": "a, b", "cap": "none"}) == {
        "limit": 7,
        "ratio": 0.25,
        "on": True,
        "names": ("a", "b"),
        "cap": None,
    }
    assert Opts.parse_value("cap", "3") == 3
    with pytest.raises(ValueError, match="not a valid int"):
        Opts.parse_value("limit", "many")
    with pytest.raises(ValueError, match="bool"):
        Opts.parse_value("on", "maybe")
    with pytest.raises(KeyError):
        Opts.parse_value("nope", "1")


def test_analyses_with_parameters_are_cached_per_parameters():
    runs: list[int] = []

    @dataclass(frozen=True)
    class NodesAbove(Analysis):
        threshold: int

        def compute(self, model, am):  # noqa: ANN001
            runs.append(self.threshold)
            return len(model.graph.nodes) > self.threshold

    am = AnalysisManager()
    m = _chain_of_identities(3)
    assert am.get(NodesAbove(1), m) is True and am.get(NodesAbove(50), m) is False
    assert am.get(NodesAbove(1), m) is True and runs == [1, 50]
    m.graph.nodes[0].set_attr("tag", 1)
    assert am.get(NodesAbove(1), m) is True and runs == [1, 50, 1]
