"""Rewrite rules: a pattern, a check and a rewrite, applied by a pass.

A :class:`Rule` is anchored on an op type (the last node of its pattern, whose outputs the
rewrite replaces). :meth:`Rule.match` walks producers from the anchor with the helpers of
:class:`RewriteContext` and either returns a :class:`Match` or raises :class:`MatchFailed` with
a reason ("the scale is not a constant"), which is kept so that a user can ask why a rule did
not fire on a node (``onnxforge compile --explain NODE``). :meth:`Rule.rewrite` builds the
replacement; every node it creates carries the rule's name as provenance
(``metadata_props["onnxforge.rule"]``).

The engine guarantees, for every rule:

* a matched node other than the anchor whose outputs are read outside the match (or are graph
  outputs) blocks the rewrite, so nothing computed elsewhere is lost;
* rules are opset-aware (``min_opset``/``max_opset`` of the default domain);
* the matched nodes are removed after the rewrite; dead initializers are left for dead-code
  elimination.

Rules never rewrite a constant that is read outside the match: they check with
:meth:`RewriteContext.exclusive` and fail with a reason otherwise (a shared weight is folded into
a copy or not at all).

Rule sets are explicit tuples of rule instances given to :class:`RewritePass` subclasses; there
is no registration by import side effect.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import numpy as np

from onnxforge.analysis.shapes import GenericShapes
from onnxforge.ir import Graph, Model, Node, Value, replace_all_uses_with
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


def fail(reason: str) -> NoReturn:
    """Abort the current match with ``reason``."""
    raise MatchFailed(reason)


@dataclass
class Match:
    """A successful match: the anchor, every node the rewrite replaces (anchor included), and
    whatever the rule captured for its rewrite."""

    anchor: Node
    nodes: list[Node]
    captures: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.captures[key]


class RewriteContext:
    """Helpers for matching and rewriting inside one graph."""

    def __init__(self, model: Model, graph: Graph, analyses: AnalysisManager | None = None) -> None:
        self.model = model
        self.graph = graph
        self.analyses = analyses if analyses is not None else AnalysisManager()
        self.rule: Rule | None = None
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

    # -- rewriting -----------------------------------------------------------------------------
    def add(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        *,
        domain: str = "",
        attrs: dict[str, Any] | None = None,
        name: str = "",
        num_outputs: int = 1,
    ) -> Node:
        """Create a node stamped with the current rule's name (and import its domain)."""
        if domain and domain not in self.model.opset_imports:
            self.model.opset_imports[domain] = 1
        rule = self.rule.name if self.rule is not None else "rule"
        return self.graph.add_node(
            op_type, inputs, num_outputs, domain=domain, name=name or f"{rule}/{op_type}", attrs=attrs, provenance=rule
        )

    def constant(self, data: np.ndarray, name: str) -> Value:
        """A new constant (initializer where the IR version allows, else a Constant node)."""
        return add_constant(self.graph, np.ascontiguousarray(data), name)

    def replace(self, old: Value | None, new: Value | None) -> None:
        """Readers of ``old`` read ``new``; ``new`` inherits ``old``'s type when it has none."""
        if old is None or new is None:
            return
        if new.type is None and old.type is not None:
            new.type = old.type
        replace_all_uses_with(old, new)


def _domain_is(node: Node, domain: str) -> bool:
    return (node.domain in ("", "ai.onnx")) if domain in ("", "ai.onnx") else node.domain == domain


class Rule:
    """Base class of rewrite rules; see the module docstring."""

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

    def match(self, node: Node, rc: RewriteContext) -> Match:
        raise NotImplementedError

    def rewrite(self, match: Match, rc: RewriteContext) -> None:
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

    rules: ClassVar[tuple[Rule, ...]] = ()
    max_rounds: ClassVar[int] = 8
    #: Rewrite rules replace a pattern by one that computes the same (exactly, or within float
    #: reordering tolerance): every rewrite pass is lossless.
    lossless = True

    def active_rules(self, model: Model) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.applies_to(model))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rules = self.active_rules(model)
        by_anchor: dict[tuple[str, str], list[Rule]] = {}
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
        by_anchor: dict[tuple[str, str], list[Rule]],
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
                rc.rule = rule
                label = node.name or f"<{node.op_type}>"
                try:
                    m = rule.match(node, rc)
                    _check_isolated(m)
                except MatchFailed as e:
                    trace.misses.setdefault(label, {})[rule.name] = e.reason
                    continue
                rule.rewrite(m, rc)
                _remove_matched(graph, m)
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


def _remove_matched(graph: Graph, m: Match) -> None:
    """Remove the matched nodes that are now dead (the anchor's outputs were replaced)."""
    dead = [n for n in m.nodes if n.graph is graph]
    if not dead:
        return
    dead_set = set(dead)
    for n in dead:
        for v in n.outputs:
            if v is not None and (v.is_graph_output() or any(u not in dead_set for u in v.consumers())):
                raise RuntimeError(f"rewrite left {v.name!r} in use; the rule must replace the anchor's outputs")
    graph.remove(dead)
