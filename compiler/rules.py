"""Rewrite rules: a pattern, a check and a rewrite, applied by a pass.

A :class:`Rule` is anchored on an op type (the last node of its pattern, whose outputs the
rewrite replaces). It works in two steps, neither of which changes the graph:

* :meth:`Rule.match` walks producers from the anchor with the helpers of :class:`RewriteContext`
  and either returns the rule's own :class:`Match` subclass (a dataclass whose typed fields are
  what the rewrite needs) or raises :class:`MatchFailed` with a reason ("the scale is not a
  constant"), which is kept so that a user can ask why a rule did not fire on a node
  (``onnxforge compile --explain NODE``);
* :meth:`Rule.rewrite` builds the new nodes and constants on a :class:`RewriteBuilder`, which
  records them without touching the graph, and returns a :class:`Replacement`: each value it
  replaces (the anchor's outputs, and any other value it redirects) mapped to its new value.

The engine (:class:`RewritePass`) then applies the replacement in one step, after checking it
(:class:`RewriteError` otherwise, with the graph untouched): every matched output that is still
read (or is a graph output) is replaced; the new nodes read only values in scope (this graph's,
an enclosing graph's, or built by the builder), never a value the rewrite replaces or a value
of a matched node it removes, and no value that no node of the graph computes is replaced. A
rewrite that raises leaves the graph untouched (the builder never touched it); a match or rewrite
that edits the graph anyway is a :class:`RewriteError`. Applying it inserts the new nodes with the rule's name as provenance
(``metadata_props["onnxforge.rule"]``), imports their domains, redirects every reader (graph
outputs keep their names and types) and removes the matched nodes.

The engine also guarantees, for every rule:

* a matched node other than the anchor whose outputs are read outside the match (or are graph
  outputs) blocks the rewrite, so nothing computed elsewhere is lost;
* rules are opset-aware (``min_opset``/``max_opset`` of the default domain);
* dead initializers are left for dead-code elimination.

Rules never rewrite a constant that is read outside the match: they check with
:meth:`RewriteContext.exclusive` while matching and fail with a reason otherwise (a shared weight
is folded into a copy or not at all); the builder can only add constants, never change one.

Rule sets are explicit tuples of rule instances given to :class:`RewritePass` subclasses; there
is no registration by import side effect.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import numpy as np
import onnx
from onnx import helper

from onnxforge.analysis.shapes import GenericShapes
from onnxforge.ir import PROVENANCE_KEY, Graph, Model, Node, Value, replace_all_uses_with
from onnxforge.ir.constants import add_constant, constant_value
from onnxforge.passmanager import AnalysisManager, Pass, PassContext, PassResult

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"

#: Key of ``PassContext.records`` holding :class:`RuleTrace`.
TRACE_KEY = "rules"


class MatchFailed(Exception):
    """A rule does not apply; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RewriteError(RuntimeError):
    """A rule returned a replacement the engine cannot apply (a bug in the rule); the graph is
    left as it was."""


def fail(reason: str) -> NoReturn:
    """Abort the current match with ``reason``."""
    raise MatchFailed(reason)


@dataclass
class Match:
    """A successful match: the anchor and every node the rewrite removes (anchor included).

    Each rule subclasses it as a dataclass with typed fields for what its rewrite needs::

        @dataclass
        class ConvBatchNormMatch(Match):
            conv: Node
            scale: np.ndarray
    """

    anchor: Node
    nodes: list[Node]


M = TypeVar("M", bound=Match)


class RewriteContext:
    """Read-only helpers for matching inside one graph (a match never changes the graph)."""

    def __init__(self, model: Model, graph: Graph, analyses: AnalysisManager | None = None) -> None:
        self.model = model
        self.graph = graph
        self.analyses = analyses if analyses is not None else AnalysisManager()
        self._shapes: Any = None

    def concrete_shape(self, v: Value | None) -> tuple[int, ...] | None:
        """``v``'s shape when every dynamic input dimension takes a distinct generic size
        (7, 11, 13, ...): two values with equal concrete shapes have equal shapes for generic
        inputs, which symbolic inference cannot always tell (it names the same dim twice).
        Main graph only; the shared :class:`~onnxforge.analysis.shapes.GenericShapes` analysis,
        read once per context."""
        if v is None or self.graph is not self.model.graph:
            return None
        if self._shapes is None:
            # One snapshot per context: later rewrites must not re-run inference per query.
            self._shapes = self.analyses.get(GenericShapes(), self.model) or False
        if self._shapes is False:
            return None
        info = self._shapes.info(v)
        return None if info is None else info.shape

    @property
    def opset(self) -> int:
        return self.model.opset("") or 1

    # -- matching ------------------------------------------------------------------------------
    def const(self, v: Value | None) -> np.ndarray | None:
        """The data of a constant value (initializer or Constant node), else None."""
        try:
            return constant_value(v)
        except ValueError:
            return None

    def require_const(self, v: Value | None, what: str) -> np.ndarray:
        arr = self.const(v)
        if arr is None:
            fail(f"{what} is not a constant")
        return arr

    def producer(self, v: Value | None, op_types: str | Sequence[str], what: str, *, domain: str = "") -> Node:
        """The node producing ``v`` if it is one of ``op_types`` in this graph, else fail."""
        ops = (op_types,) if isinstance(op_types, str) else tuple(op_types)
        p = v.producer if v is not None else None
        if p is None or p.op_type not in ops or p.graph is not self.graph or not _domain_is(p, domain):
            got = f"{p.op_type}" if p is not None else "no node"
            fail(f"{what} comes from {got}, not {' or '.join(ops)}")
        return p

    def maybe_producer(self, v: Value | None, op_types: str | Sequence[str], *, domain: str = "") -> Node | None:
        try:
            return self.producer(v, op_types, "value", domain=domain)
        except MatchFailed:
            return None

    def single_consumer(self, v: Value | None, what: str) -> Node:
        """The only node reading ``v`` (which must not be a graph output), else fail."""
        if v is None:
            fail(f"{what} is missing")
        users = v.consumers()
        if len(users) != 1 or v.is_graph_output():
            fail(f"{what} has {len(users)} readers{' and is a graph output' if v.is_graph_output() else ''}")
        return users[0]

    def exclusive(self, v: Value | None, nodes: Iterable[Node]) -> bool:
        """True when ``v`` is read by no node outside ``nodes`` (and is not a graph output)."""
        if v is None:
            return True
        allowed = set(nodes)
        return not v.is_graph_output() and all(u in allowed for u in v.consumers())

    def require_exclusive(self, v: Value | None, nodes: Iterable[Node], what: str) -> None:
        if not self.exclusive(v, nodes):
            fail(f"{what} is shared with nodes outside the pattern")

    @staticmethod
    def static_shape(v: Value | None) -> tuple[int, ...] | None:
        return None if v is None else v.static_shape()


def _domain_is(node: Node, domain: str) -> bool:
    return (node.domain in ("", "ai.onnx")) if domain in ("", "ai.onnx") else node.domain == domain


# -- building a replacement -----------------------------------------------------------------------


@dataclass
class _NewNode:
    op_type: str
    domain: str
    inputs: tuple[Value | None, ...]
    attrs: dict[str, Any]
    name: str
    #: One entry per output position: the new value, or None for an omitted optional output.
    outputs: tuple[Value | None, ...]


@dataclass
class _NewConstant:
    value: Value
    data: np.ndarray
    name: str


class RewriteBuilder:
    """Where :meth:`Rule.rewrite` builds its new nodes and constants. Nothing here touches the
    graph: the values it returns are new, detached :class:`Value` objects (their ``type`` may be
    set) that only the engine inserts, in the order they were built, when it applies the
    :class:`Replacement`. ``const`` reads existing constants."""

    def __init__(self, rule_name: str, rc: RewriteContext) -> None:
        self.rule_name = rule_name
        self._rc = rc
        self._steps: list[_NewNode | _NewConstant] = []
        self._built: set[Value] = set()

    @property
    def opset(self) -> int:
        """The model's default-domain opset."""
        return self._rc.opset

    def const(self, v: Value | None) -> np.ndarray | None:
        """The data of an existing constant value (initializer or Constant node), else None."""
        return self._rc.const(v)

    def op(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        *,
        attrs: Mapping[str, Any] | None = None,
        domain: str = "",
        name: str = "",
    ) -> Value:
        """A new single-output node; returns its output. ``attrs`` are python values (None entries
        are left out); ``name`` defaults to ``<rule>/<op_type>``."""
        out = self.op_outputs(op_type, inputs, 1, attrs=attrs, domain=domain, name=name)[0]
        assert out is not None
        return out

    def op_outputs(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        num_outputs: int,
        *,
        keep: Iterable[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        domain: str = "",
        name: str = "",
    ) -> tuple[Value | None, ...]:
        """A new node with ``num_outputs`` outputs, of which only those in ``keep`` (default: all)
        are produced; the others are omitted optional outputs (None in the result)."""
        for v in inputs:
            if v is not None and not isinstance(v, Value):
                raise TypeError(f"{op_type} input {v!r} is not a Value")
        kept = set(range(num_outputs)) if keep is None else set(keep)
        full = name or f"{self.rule_name}/{op_type}"
        outs = tuple(Value(f"{full}_out{i}") if i in kept else None for i in range(num_outputs))
        self._built.update(o for o in outs if o is not None)
        self._steps.append(_NewNode(op_type, domain, tuple(inputs), dict(attrs or {}), full, outs))
        return outs

    def constant(self, data: np.ndarray, name: str) -> Value:
        """A new constant (an initializer where the IR version allows, else a Constant node)."""
        v = Value(name)
        self._built.add(v)
        self._steps.append(_NewConstant(v, np.ascontiguousarray(data), name))
        return v

    def built(self, v: Value) -> bool:
        """True when ``v`` was built here."""
        return v in self._built


@dataclass(frozen=True)
class Replacement:
    """What :meth:`Rule.rewrite` returns: every value it replaces → the value its readers read
    from now on (a value built on the :class:`RewriteBuilder`, or an existing one)."""

    values: Mapping[Value, Value]

    @classmethod
    def outputs(cls, node: Node, *new: Value | None) -> Replacement:
        """``node``'s outputs, in order, replaced by ``new`` (a None entry: not replaced)."""
        values: dict[Value, Value] = {}
        for i, v in enumerate(new):
            old = node.output(i)
            if v is None:
                continue
            if old is None:
                raise RewriteError(f"{node.op_type} {node.name!r} has no output {i} to replace")
            values[old] = v
        return cls(values)

    def also(self, old: Value | None, new: Value | None) -> Replacement:
        """This replacement, and ``old`` replaced by ``new`` too."""
        if old is None or new is None:
            raise RewriteError("a replaced value or its replacement is missing")
        return Replacement({**self.values, old: new})


class Rule(Generic[M]):
    """Base class of rewrite rules, generic in the rule's :class:`Match` subclass; see the module
    docstring."""

    name: ClassVar[str] = "rule"
    summary: ClassVar[str] = ""
    #: Op types of the anchor node (in ``anchor_domain``).
    anchors: ClassVar[tuple[str, ...]] = ()
    anchor_domain: ClassVar[str] = ""
    #: Default-domain opset range the rule applies to.
    min_opset: ClassVar[int] = 1
    max_opset: ClassVar[int | None] = None

    def applies_to(self, model: Model) -> bool:
        opset = model.opset("") or 1
        return opset >= self.min_opset and (self.max_opset is None or opset <= self.max_opset)

    def match(self, node: Node, rc: RewriteContext) -> M:
        """The match anchored on ``node``, or :class:`MatchFailed` with the reason. Reads only."""
        raise NotImplementedError

    def rewrite(self, match: M, rb: RewriteBuilder) -> Replacement:
        """Build the new nodes on ``rb`` and say which values they replace. Reads only; may
        still refuse with :class:`MatchFailed` (recorded like a failed match)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


@dataclass
class RuleTrace:
    """What the rules did: hits per rule, and for each node the rules tried and why they did
    not fire (the last attempt wins)."""

    hits: Counter[str] = field(default_factory=Counter)
    fired: dict[str, list[str]] = field(default_factory=dict)
    misses: dict[str, dict[str, str]] = field(default_factory=dict)

    def explain(self, node_name: str) -> list[str]:
        """Readable lines about ``node_name``: the rules that fired on it and why others did not."""
        lines = [f"{rule}: fired" for rule in self.fired.get(node_name, [])]
        lines += [f"{rule}: did not fire: {reason}" for rule, reason in self.misses.get(node_name, {}).items()]
        return lines or ["no rule is anchored on this node (or no such node)"]


def rule_trace(ctx: PassContext) -> RuleTrace:
    """The context's :class:`RuleTrace` (created on first use)."""
    trace = ctx.records.get(TRACE_KEY)
    if not isinstance(trace, RuleTrace):
        trace = RuleTrace()
        ctx.records[TRACE_KEY] = trace
    return trace


class RewritePass(Pass):
    """Applies a rule set to every graph until no rule fires (at most ``max_rounds`` rounds).

    Subclasses set ``rules`` (an explicit tuple). Stats count hits per rule name.
    """

    rules: ClassVar[tuple[Rule[Any], ...]] = ()
    max_rounds: ClassVar[int] = 8
    #: Rewrite rules replace a pattern by one that computes the same (exactly, or within float
    #: reordering tolerance): every rewrite pass is lossless.
    lossless = True

    def active_rules(self, model: Model) -> tuple[Rule[Any], ...]:
        return tuple(r for r in self.rules if r.applies_to(model))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rules = self.active_rules(model)
        by_anchor: dict[tuple[str, str], list[Rule[Any]]] = {}
        for r in rules:
            for op in r.anchors:
                by_anchor.setdefault((r.anchor_domain, op), []).append(r)
        trace = rule_trace(ctx)
        hits: Counter[str] = Counter()
        start = model.version
        for _ in range(self.max_rounds):
            fired = 0
            for graph in list(model.graph.all_graphs()):
                if graph.model is None and graph is not model.graph:
                    continue
                rc = RewriteContext(model, graph, ctx.analyses)
                fired += self._apply(graph, rc, by_anchor, trace, hits)
            if not fired:
                break
        return PassResult(modified=model.version != start, stats=dict(hits))

    def _apply(
        self,
        graph: Graph,
        rc: RewriteContext,
        by_anchor: dict[tuple[str, str], list[Rule[Any]]],
        trace: RuleTrace,
        hits: Counter[str],
    ) -> int:
        fired = 0
        # Last nodes first: an anchor ends its pattern, so the longest pattern wins (the beta Add
        # of a layer norm is tried before the gamma Mul inside it).
        for node in reversed(graph.topological_order()):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            for rule in by_anchor.get((domain, node.op_type), ()):
                if node.graph is not graph:
                    break  # removed by an earlier rewrite
                label = node.name or f"<{node.op_type}>"
                version = rc.model.version
                try:
                    m = rule.match(node, rc)
                    _check_isolated(m)
                    rb = RewriteBuilder(rule.name, rc)
                    replacement = rule.rewrite(m, rb)
                except MatchFailed as e:
                    trace.misses.setdefault(label, {})[rule.name] = e.reason
                    continue
                finally:
                    if rc.model.version != version:
                        raise RewriteError(f"rule {rule.name} changed the graph while matching or rewriting {label}")
                apply_replacement(graph, rule.name, m, rb, replacement)
                trace.misses.get(label, {}).pop(rule.name, None)
                trace.fired.setdefault(label, []).append(rule.name)
                trace.hits[rule.name] += 1
                hits[rule.name] += 1
                fired += 1
                log.debug("rule %s fired on %s", rule.name, label)
                break
        return fired


def _check_isolated(m: Match) -> None:
    inside = set(m.nodes)
    for n in m.nodes:
        if n is m.anchor:
            continue
        for v in n.outputs:
            if v is None:
                continue
            if v.is_graph_output():
                fail(f"{v.name!r} (inside the pattern) is a graph output")
            for user in v.consumers():
                if user not in inside:
                    fail(f"{v.name!r} (inside the pattern) is also read by {user.name or user.op_type!r}")


def _in_scope(v: Value, graph: Graph) -> bool:
    """``v`` is defined in ``graph`` or an enclosing graph (node output, input or initializer)."""
    g: Graph | None = graph
    while g is not None:
        p = v.producer
        if p is not None:
            if p.graph is g:
                return True
        elif v.graph is g and (v.is_graph_input() or v.is_initializer()):
            return True
        g = g.parent.graph if g.parent is not None else None
    return False


def check_replacement(graph: Graph, rule_name: str, m: Match, rb: RewriteBuilder, rep: Replacement) -> None:
    """Raise :class:`RewriteError` unless ``rep`` can be applied to ``graph`` (see the module
    docstring); changes nothing."""

    def bad(msg: str) -> NoReturn:
        raise RewriteError(f"rule {rule_name} on {m.anchor.name or m.anchor.op_type!r}: {msg}")

    removed = {n for n in m.nodes if n.graph is graph}
    removed_outputs = {v for n in removed for v in n.outputs if v is not None}
    replaced = rep.values

    def check_readable(v: Value, what: str) -> None:
        if rb.built(v):
            return
        if v in replaced:
            bad(f"{what} reads {v.name!r}, which the rewrite replaces")
        if v in removed_outputs:
            bad(f"{what} reads {v.name!r}, computed by a matched node that the rewrite removes")
        if not _in_scope(v, graph):
            bad(f"{what} reads {v.name!r}, which is not in scope of graph {graph.name!r}")

    for step in rb._steps:
        if isinstance(step, _NewNode):
            for v in step.inputs:
                if v is not None:
                    check_readable(v, f"new {step.op_type} {step.name!r}")
    for old, new in replaced.items():
        if not isinstance(old, Value) or not isinstance(new, Value):
            bad(f"replacement {old!r} -> {new!r} is not between values")
        if rb.built(old) or old.producer is None or old.producer.graph is not graph:
            bad(f"replaces {old.name!r}, which no node of this graph computes")
        if new in replaced:
            bad(f"{new.name!r} is both replaced and a replacement")
        check_readable(new, f"the replacement of {old.name!r}")
    for n in removed:
        for v in n.outputs:
            if v is None or v in replaced:
                continue
            if v.is_graph_output() or any(u not in removed for u in v.consumers()):
                bad(f"leaves {v.name!r} in use; the rewrite must replace it")


def apply_replacement(graph: Graph, rule_name: str, m: Match, rb: RewriteBuilder, rep: Replacement) -> None:
    """Check ``rep`` (:func:`check_replacement`), then, in one step: insert the nodes and constants
    built on ``rb`` in build order (nodes stamped with ``rule_name`` as provenance, their domains
    imported), redirect the readers of every replaced value (a new value without a type takes
    the old one's) and remove the matched nodes."""
    check_replacement(graph, rule_name, m, rb, rep)
    model = graph._require_model()
    real: dict[Value, Value] = {}  # constant placeholders -> the values add_constant made
    for step in rb._steps:
        if isinstance(step, _NewConstant):
            real[step.value] = add_constant(graph, step.data, step.name)
            continue
        if step.domain and step.domain not in model.opset_imports:
            model.opset_imports[step.domain] = 1
        outs: list[Value | None] = []
        for i, out in enumerate(step.outputs):
            unique = model.unique_name(f"{step.name}_out{i}")  # omitted outputs reserve theirs too
            if out is not None:
                out.name = unique
            outs.append(out)
        inputs = [real.get(v, v) if v is not None else None for v in step.inputs]
        node = Node(step.op_type, inputs, outs, domain=step.domain, name=model.unique_node_name(step.name))
        for k, a in step.attrs.items():
            if a is not None:
                node.attributes[k] = helper.make_attribute(k, a)
        node.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=rule_name))
        graph.append(node)
    for old, new in rep.values.items():
        new = real.get(new, new)
        if new.type is None and old.type is not None:
            new.type = old.type
        replace_all_uses_with(old, new)
    dead = [n for n in m.nodes if n.graph is graph]
    if dead:
        graph.remove(dead)
