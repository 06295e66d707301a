"""Pass infrastructure: passes with typed options, results, composition, a fixed-point manager,
a scoped context with instruments, and an analysis cache.

Modelled on onnx-ir's pass infra (requires -> call -> ensures, errors that name the failing pass
and its predecessors), TVM's PassContext and instruments, and LLVM's preserved-analyses contract.

Writing a pass::

    @dataclass(frozen=True)
    class MyOptions(PassOptions):
        threshold: int = 4

        def validate(self) -> None:
            if self.threshold < 0:
                raise ValueError("threshold must be >= 0")

    class MyPass(Pass[MyOptions]):
        name = "my-pass"
        summary = "What it does, in one line."
        Options = MyOptions
        lossless = True  # every pass declares it: outputs kept (True) or changed within a budget

        def run(self, model: Model, ctx: PassContext) -> PassResult:
            ...
            return PassResult(modified=changed, stats={"rewritten": n})

The context runs ``requires`` -> ``run`` -> checks the result -> ``ensures``, and checks the
in-place contract: an in-place pass (the default) returns no model or the same one, and says
``modified=True`` exactly when it changed the model; a functional pass (``in_place = False``)
returns a new model in ``PassResult.model`` and must leave its input untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import types
import typing
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from onnxforge import modelio
from onnxforge.errors import BudgetError, OnnxForgeError, PassError, UsageError
from onnxforge.ir import Model, verify
from onnxforge.progress import ProgressHook, Stage

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassOptions:
    """Base of every pass's options: a frozen dataclass, validated at construction."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for out-of-range values."""

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any]]:
        """(name, type, default) of each option, for ``onnxforge passes``."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append((f.name, str(f.type), default))
        return out

    @classmethod
    def parse_value(cls, name: str, raw: str) -> Any:
        """The option ``name`` from its text (``"true"``, ``"1024"``, ``"0.5"``, ``"a,b"``).

        Raises ``KeyError`` for an unknown option and ``ValueError`` for text that is not a
        valid value of the option's type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise KeyError(name)
        hints = typing.get_type_hints(cls)
        return _parse_typed(raw, hints.get(name, str))

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> dict[str, Any]:
        """Typed keyword values for this options class from ``{name: text}``."""
        return {k: cls.parse_value(k, v) for k, v in values.items()}


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_typed(raw: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if raw.strip().lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_typed(raw, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{raw!r} is not a valid {typ}")
    if origin is typing.Literal:
        for arg in args:
            if str(arg) == raw:
                return arg
        raise ValueError(f"{raw!r} is not one of {', '.join(map(str, args))}")
    if origin in (tuple, list, frozenset):
        inner = args[0] if args else str
        items = tuple(_parse_typed(x.strip(), inner) for x in raw.split(",") if x.strip())
        return items if origin is tuple else origin(items)
    if typ is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a valid bool (true/false)")
    if typ is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid int") from None
    if typ is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid float") from None
    return raw


@dataclass
class PassResult:
    """What a pass did. ``stats`` are counters for the report (``{"removed_nodes": 3}``).

    ``model`` is the pass's output when it is a functional pass that built a new model (None:
    the model it was given, changed in place or not)."""

    modified: bool
    stats: dict[str, float] = field(default_factory=dict)
    #: Analyses still valid after this pass (only meaningful when ``modified``).
    preserved: frozenset[type[Analysis]] = frozenset()
    model: Model | None = None

    def output(self, given: Model) -> Model:
        """The model after the pass: ``model`` when the pass returned one, else ``given``."""
        return self.model if self.model is not None else given


# --------------------------------------------------------------------------------------------
# Analyses
# --------------------------------------------------------------------------------------------
class Analysis:
    """An analysis computes a result from a model; :class:`AnalysisManager` caches it per model
    version. Subclasses implement :meth:`compute`. An analysis with parameters is a frozen
    dataclass: instances with equal parameters share a cache entry (``key()``)."""

    name: ClassVar[str] = "analysis"

    def compute(self, model: Model, am: AnalysisManager) -> Any:
        raise NotImplementedError

    def key(self) -> Hashable:
        """What distinguishes this instance's results from another's (its parameters)."""
        return self if dataclasses.is_dataclass(self) else ()


class AnalysisManager:
    """Caches analysis results keyed by (model, analysis type, parameters) and stamped with the
    model version they were computed at.

    Any mutation bumps ``model.version`` and so invalidates every cached result, except those a
    pass declares preserved, which are re-stamped with the new version.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, type[Analysis], Hashable], tuple[int, Any]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, analysis: type[Analysis] | Analysis, model: Model) -> Any:
        """The result of ``analysis`` (a class, or an instance carrying parameters) on ``model``."""
        inst = analysis() if isinstance(analysis, type) else analysis
        key = (id(model), type(inst), inst.key())
        entry = self._cache.get(key)
        if entry is not None and entry[0] == model.version:
            self.hits += 1
            return entry[1]
        self.misses += 1
        version = model.version
        result = inst.compute(model, self)
        self._cache[key] = (version, result)
        return result

    def after_pass(self, model: Model, result: PassResult) -> None:
        if not result.modified:
            return
        for (mid, analysis, params), (_version, value) in list(self._cache.items()):
            if mid != id(model):
                continue
            if analysis in result.preserved:
                self._cache[(mid, analysis, params)] = (model.version, value)
            else:
                del self._cache[(mid, analysis, params)]

    def clear(self) -> None:
        self._cache.clear()


# --------------------------------------------------------------------------------------------
# Instruments
# --------------------------------------------------------------------------------------------
class Instrument:
    """Hooks around every pass run (TVM-style). Keep cross-cutting work here, out of passes."""

    def before_pass(self, p: Pass, model: Model, ctx: PassContext) -> None:  # noqa: B027
        pass

    def after_pass(self, p: Pass, model: Model, result: PassResult, ctx: PassContext) -> None:  # noqa: B027
        pass


@dataclass
class PassTiming:
    name: str
    runs: int = 0
    seconds: float = 0.0
    modified_runs: int = 0
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PassSpan:
    """One run of a leaf pass: seconds from the first pass's start to its start and end."""

    name: str
    start: float
    end: float
    modified: bool


class TimingInstrument(Instrument):
    """Wall time, runs and summed statistics per pass name (leaf passes only), and each run's
    span in order (:attr:`spans`, the first :attr:`MAX_SPANS` runs) for a timeline."""

    #: Runs kept in :attr:`spans` (a fixed-point pipeline on a big model runs passes often).
    MAX_SPANS = 2000

    def __init__(self) -> None:
        self.per_pass: dict[str, PassTiming] = {}
        self.spans: list[PassSpan] = []
        self._start: list[float] = []
        self._origin: float | None = None

    def before_pass(self, p: Pass, model: Model, ctx: PassContext) -> None:
        now = time.perf_counter()
        if self._origin is None:
            self._origin = now
        self._start.append(now)

    def after_pass(self, p: Pass, model: Model, result: PassResult, ctx: PassContext) -> None:
        end = time.perf_counter()
        started = self._start.pop()
        elapsed = end - started
        if isinstance(p, CompositePass):
            return
        if len(self.spans) < self.MAX_SPANS and self._origin is not None:
            self.spans.append(PassSpan(p.name, started - self._origin, end - self._origin, bool(result.modified)))
        t = self.per_pass.setdefault(p.name, PassTiming(p.name))
        t.runs += 1
        t.seconds += elapsed
        t.modified_runs += int(result.modified)
        for k, v in result.stats.items():
            t.stats[k] = t.stats.get(k, 0) + v


class VerifyInstrument(Instrument):
    """Checks IR invariants after every pass that changed the model."""

    def after_pass(self, p: Pass, model: Model, result: PassResult, ctx: PassContext) -> None:
        if result.modified and not isinstance(p, CompositePass):
            verify(model)


class DumpInstrument(Instrument):
    """Saves the model after every pass that changed it: ``DIR/NNN_<pass>.onnx``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.count = 0

    def after_pass(self, p: Pass, model: Model, result: PassResult, ctx: PassContext) -> None:
        if not result.modified or isinstance(p, CompositePass):
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the dump folder {self.directory}: {e.strerror or e}") from None
        self.count += 1
        # modelio.save refuses to replace any file the model's tensor store reads (the input's
        # model and external data files), also through links. Inside a pipeline the refusal
        # reaches the caller wrapped in a PassError; the CLI checks the folder before any work.
        modelio.save(model, self.directory / f"{self.count:03d}_{p.name}.onnx", label="dump file")


class ProgressInstrument(Instrument):
    """Reports a pipeline's progress to a :data:`~onnxforge.progress.ProgressHook` as the
    ``"passes"`` stage: the label names the leaf pass running, the count is over the
    pipeline's steps (nested :class:`Sequential` pipelines flattened, a :class:`FixedPoint`
    one step however many rounds it takes, disabled passes left out). Call :meth:`close` when
    the pipeline ends."""

    def __init__(self, hook: ProgressHook | None, pipeline: Pass, disabled: Iterable[str] = ()) -> None:
        steps = _steps(pipeline, set(disabled))
        self.name = pipeline.name
        self.steps = {id(p) for p in steps}
        self.stage = Stage(hook, "passes", "running passes", unit="passes", total=len(steps)).start()

    def before_pass(self, p: Pass, model: Model, ctx: PassContext) -> None:
        if not isinstance(p, CompositePass):
            self.stage.describe(f"pass {p.name}")

    def after_pass(self, p: Pass, model: Model, result: PassResult, ctx: PassContext) -> None:
        if id(p) in self.steps:
            self.stage(self.stage.done + 1)

    def close(self) -> None:
        if not self.stage.closed:
            self.stage.label = f"ran pipeline {self.name}"
            self.stage.close()


def _steps(p: Pass, disabled: set[str]) -> list[Pass]:
    if p.name in disabled:
        return []
    if isinstance(p, Sequential):
        return [s for child in p.passes for s in _steps(child, disabled)]
    return [p]


# --------------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------------
class PassContext:
    """The scope a pipeline runs in: disabled passes, instruments, the analysis cache, history."""

    def __init__(
        self,
        *,
        instruments: Sequence[Instrument] = (),
        disabled: Iterable[str] = (),
        analyses: AnalysisManager | None = None,
    ) -> None:
        self.instruments = list(instruments)
        self.disabled = set(disabled)
        self.analyses = analyses or AnalysisManager()
        #: Names of the leaf passes run so far, in order.
        self.history: list[str] = []
        #: Information passes leave for the report (e.g. the rule trace), by key.
        self.records: dict[str, Any] = {}

    def run(self, p: Pass, model: Model) -> PassResult:
        """Run one pass under the instruments, wrapping failures in :class:`PassError`."""
        if p.name in self.disabled:
            return PassResult(False)
        leaf = not isinstance(p, CompositePass)
        for inst in self.instruments:
            inst.before_pass(p, model, self)
        version = model.version
        try:
            if leaf:
                p.requires(model, self)
            result = p.run(model, self)
        except (PassError, BudgetError, UsageError):
            raise  # a budget the pass cannot meet and a bad option or input are the user's to fix
        except Exception as e:
            raise PassError(p.name, self.history, e) from e
        if not isinstance(result, PassResult):
            raise PassError(p.name, self.history, TypeError(f"run() returned {type(result).__name__}"))
        if leaf:
            self._check_contract(p, model, version, result)
        out = result.output(model)
        if leaf:
            self.history.append(p.name)
            try:
                p.ensures(out, self)
            except PassError:
                raise
            except Exception as e:
                raise PassError(p.name, self.history[:-1], e) from e
        self.analyses.after_pass(out, result)
        for inst in reversed(self.instruments):
            inst.after_pass(p, out, result, self)
        if result.modified:
            log.debug("pass %s modified the model: %s", p.name, result.stats)
        return result

    def _check_contract(self, p: Pass, model: Model, version: int, result: PassResult) -> None:
        def broke(why: str) -> PassError:
            return PassError(p.name, self.history, RuntimeError(why))

        if p.in_place:
            if result.model is not None and result.model is not model:
                raise broke("is an in-place pass but returned a different model")
            if not result.modified and model.version != version:
                raise broke("changed the model but reported modified=False")
        else:
            if model.version != version:
                raise broke("is a functional pass but changed the model it was given")
            if result.modified and result.model is None:
                raise broke("is a functional pass and reported modified=True without returning a model")


# --------------------------------------------------------------------------------------------
# Passes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoOptions(PassOptions):
    """For passes without options."""


OptionsT = TypeVar("OptionsT", bound=PassOptions)


class Pass(Generic[OptionsT]):
    """Base class of passes. Subclasses set ``name``, ``summary``, ``lossless``, optionally
    ``Options``, and implement :meth:`run`, mutating the model in place (or, with
    ``in_place = False``, returning a new model in :attr:`PassResult.model`)."""

    name: ClassVar[str] = "pass"
    summary: ClassVar[str] = ""
    Options: ClassVar[type[PassOptions]] = NoOptions
    #: Declared by every concrete pass, never defaulted: True when the pass keeps every output
    #: bit-for-bit or within float reordering tolerance; False for passes checked by an error
    #: budget (quantization, pruning, weight sharing).
    lossless: bool
    #: False for functional passes (they return a new model and leave their input alone).
    in_place: ClassVar[bool] = True
    options: OptionsT

    def __init__(self, options: OptionsT | None = None, **kwargs: Any) -> None:
        if not isinstance(self, CompositePass) and not hasattr(self, "lossless"):
            raise TypeError(f"{type(self).__name__} must declare lossless = True or False")
        if options is not None and kwargs:
            raise UsageError(f"{self.name}: pass either an options object or keyword options, not both")
        if options is None:
            names = {f.name for f in dataclasses.fields(self.Options)}
            unknown = set(kwargs) - names
            if unknown:
                known = ", ".join(sorted(names)) or "none"
                raise UsageError(f"{self.name}: unknown option(s) {', '.join(sorted(unknown))} (known: {known})")
            try:
                options = self.Options(**kwargs)  # type: ignore[assignment]
            except (TypeError, ValueError) as e:
                raise UsageError(f"{self.name}: {e}") from None
        elif not isinstance(options, self.Options):
            raise UsageError(f"{self.name}: options must be {self.Options.__name__}")
        self.options = options  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"

    def requires(self, model: Model, ctx: PassContext) -> None:
        """Check preconditions before :meth:`run` (raise with the reason); default: none."""

    def ensures(self, model: Model, ctx: PassContext) -> None:
        """Check postconditions on the pass's output (raise with the reason); default: none."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def __call__(self, model: Model, ctx: PassContext | None = None) -> PassResult:
        """Run this pass (and, for composites, its children) in ``ctx`` or a fresh context."""
        return (ctx or PassContext()).run(self, model)


class CompositePass(Pass[NoOptions]):
    """A pass made of other passes. Instruments see the children individually. It is lossless
    when every child is."""

    def __init__(self, passes: Sequence[Pass], *, name: str | None = None) -> None:
        super().__init__()
        self.passes = list(passes)
        self.lossless = all(p.lossless for p in self.passes)
        if name:
            self.name = name  # type: ignore[misc]

    def leaves(self) -> list[Pass]:
        out: list[Pass] = []
        for p in self.passes:
            out.extend(p.leaves() if isinstance(p, CompositePass) else [p])
        return out


class Sequential(CompositePass):
    """Runs its passes once, in order."""

    name = "sequential"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        modified = False
        stats: dict[str, float] = {}
        current = model
        for p in self.passes:
            r = ctx.run(p, current)
            current = r.output(current)
            modified |= r.modified
            for k, v in r.stats.items():
                stats[k] = stats.get(k, 0) + v
        return PassResult(modified, stats, model=None if current is model else current)


class FixedPoint(CompositePass):
    """Repeats its passes until a whole round changes nothing (or ``max_iterations``)."""

    name = "fixed-point"

    def __init__(self, passes: Sequence[Pass], *, max_iterations: int = 10, name: str | None = None) -> None:
        super().__init__(passes, name=name)
        if max_iterations < 1:
            raise UsageError("max_iterations must be >= 1")
        self.max_iterations = max_iterations
        self.iterations = 0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        modified = False
        stats: dict[str, float] = {}
        self.iterations = 0
        current = model
        for _ in range(self.max_iterations):
            self.iterations += 1
            round_modified = False
            for p in self.passes:
                r = ctx.run(p, current)
                current = r.output(current)
                round_modified |= r.modified
                for k, v in r.stats.items():
                    stats[k] = stats.get(k, 0) + v
            modified |= round_modified
            if not round_modified:
                break
        else:
            log.info("%s stopped after %d iterations without reaching a fixed point", self.name, self.max_iterations)
        stats["iterations"] = self.iterations
        return PassResult(modified, stats, model=None if current is model else current)


class PassManager:
    """Runs a pipeline over a model with a context; the library's entry point to passes."""

    def __init__(self, pipeline: Pass | Sequence[Pass], *, instruments: Sequence[Instrument] = (),
                 disabled: Iterable[str] = ()) -> None:
        self.pipeline = pipeline if isinstance(pipeline, Pass) else Sequential(list(pipeline))
        self.instruments = list(instruments)
        self.disabled = set(disabled)

    def run(self, model: Model) -> tuple[PassResult, PassContext]:
        ctx = PassContext(instruments=self.instruments, disabled=self.disabled)
        try:
            result = ctx.run(self.pipeline, model)
        except OnnxForgeError:
            raise
        return result, ctx
