"""What a compilation did: per-pass time and statistics, model size before and after."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from onnxforge.ir import Model
from onnxforge.passmanager import PassSpan, PassTiming
from onnxforge.reporting.sketch import GraphSketch
from onnxforge.tables import format_table

if TYPE_CHECKING:
    from onnxforge.cost.analysis import CostTotals, NodeCost


@dataclass
class ModelStats:
    """Size of a model: nodes (all graphs), initializers, initializer bytes, ops by type."""

    nodes: int
    initializers: int
    initializer_bytes: int
    op_types: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Model) -> ModelStats:
        ops: Counter[str] = Counter()
        nodes = 0
        for n in model.graph.walk():
            nodes += 1
            ops[f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type] += 1
        inits = 0
        nbytes = 0
        for g in model.graph.all_graphs():
            for v in g.initializers.values():
                inits += 1
                nbytes += v.const_nbytes()
        return cls(nodes, inits, nbytes, dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))


@dataclass
class MeasuredLatency:
    """The input and the compiled model timed on onnxruntime, interleaved (``compile --measure``):
    medians of per-run latency, the ratio after/before with its 95% interval, on what inputs."""

    before_ms: float
    after_ms: float
    ratio_ci95: tuple[float, float]
    rounds: int
    target: str
    inputs: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "before_ms": round(self.before_ms, 4),
            "after_ms": round(self.after_ms, 4),
            "ratio_ci95": [round(x, 4) for x in self.ratio_ci95],
            "rounds": self.rounds,
            "target": self.target,
            "inputs": self.inputs,
        }

    def line(self) -> str:
        lo, hi = self.ratio_ci95
        speed = self.before_ms / self.after_ms if self.after_ms > 0 else float("inf")
        return (
            f"measured latency ({self.target}, p50 of {self.rounds} interleaved rounds on {self.inputs}): "
            f"{self.before_ms:.3f} ms -> {self.after_ms:.3f} ms ({speed:.2f}x; after/before 95% interval {lo:.3f}..{hi:.3f})"
        )


@dataclass
class Report:
    """The report of one :func:`onnxforge.compile` call (``--report FILE.json`` writes ``to_dict``)."""

    pipeline: str
    before: ModelStats
    after: ModelStats
    passes: list[PassTiming] = field(default_factory=list)
    seconds: float = 0.0
    verified: bool | None = None
    #: How ``verify`` checked the result (lossless allclose or a lossy budget) and on what data.
    verification: str = ""
    notes: list[str] = field(default_factory=list)
    #: Cost-model totals before/after (``compile(cost=True)``), and the profile used.
    cost_before: CostTotals | None = None
    cost_after: CostTotals | None = None
    cost_target: str = ""
    #: The rewrite rules' trace (:class:`onnxforge.rules.RuleTrace`), when rules ran.
    rule_trace: Any = None
    #: The int8 quantization report (:class:`onnxforge.passes.compression.int8.flow.QuantizationReport`).
    quantization: Any = None
    #: Reports of weight sharing, low rank and packed-weight lowering, in that order (each has
    #: ``summary_lines()`` and ``to_dict()``).
    compression: list[Any] = field(default_factory=list)
    #: The pruning report (:class:`onnxforge.passes.compression.pruning.PruningReport`).
    pruning: Any = None
    #: Per-node costs before/after (with ``cost_before``/``cost_after``): the HTML report's
    #: per-layer charts (``--report FILE.html``).
    cost_nodes_before: list[NodeCost] = field(default_factory=list)
    cost_nodes_after: list[NodeCost] = field(default_factory=list)
    #: The main graph before/after (drawn, or summarized per block, by the HTML report).
    sketch_before: GraphSketch | None = None
    sketch_after: GraphSketch | None = None
    #: Every leaf pass run in order, for the HTML report's timeline.
    spans: list[PassSpan] = field(default_factory=list)
    #: Latency before/after measured on onnxruntime (``compile --measure``).
    measured: MeasuredLatency | None = None

    def explain(self, node_name: str) -> list[str]:
        """Which rules fired on ``node_name`` and why the others did not."""
        if self.rule_trace is None:
            return ["no rewrite rules ran in this pipeline"]
        return list(self.rule_trace.explain(node_name))

    def to_dict(self) -> dict[str, Any]:
        d = self._base_dict()
        if self.rule_trace is not None:
            d["rules"] = {"hits": dict(sorted(self.rule_trace.hits.items()))}
        if self.quantization is not None:
            d["quantization"] = self.quantization.to_dict()
        if self.compression:
            d["compression"] = [r.to_dict() for r in self.compression]
        if self.pruning is not None:
            d["pruning"] = self.pruning.to_dict()
        if self.measured is not None:
            d["measured_latency"] = self.measured.to_dict()
        if self.cost_before is not None and self.cost_after is not None:
            d["cost"] = {
                "target": self.cost_target,
                "before": self.cost_before.to_dict(),
                "after": self.cost_after.to_dict(),
            }
        return d

    def _base_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "seconds": round(self.seconds, 4),
            "verified": self.verified,
            "verification": self.verification,
            "before": asdict(self.before),
            "after": asdict(self.after),
            "passes": [
                {
                    "name": p.name,
                    "runs": p.runs,
                    "modified_runs": p.modified_runs,
                    "seconds": round(p.seconds, 4),
                    "stats": p.stats,
                }
                for p in self.passes
            ],
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A readable before/after table plus the per-pass breakdown."""
        rows: list[tuple[str, float, float]] = [
            ("nodes", self.before.nodes, self.after.nodes),
            ("initializers", self.before.initializers, self.after.initializers),
            ("weight bytes", self.before.initializer_bytes, self.after.initializer_bytes),
        ]
        lines = [f"pipeline: {self.pipeline}    time: {self.seconds:.2f} s"]
        if self.cost_before is not None and self.cost_after is not None:
            cb, ca = self.cost_before, self.cost_after
            rows += [
                ("MACs", cb.macs, ca.macs),
                ("FLOPs", cb.flops, ca.flops),
                ("parameters", cb.params, ca.params),
                ("peak activation bytes", cb.peak_activation_bytes, ca.peak_activation_bytes),
                (f"est. latency ms ({self.cost_target})", round(cb.est_latency_ms, 4), round(ca.est_latency_ms, 4)),
            ]
        lines += format_table(
            ["", "before", "after", "change"],
            [[name, _fmt(b), _fmt(a), _delta(b, a)] for name, b, a in rows],
        )
        changed_ops = []
        for op in sorted(set(self.before.op_types) | set(self.after.op_types)):
            b, a = self.before.op_types.get(op, 0), self.after.op_types.get(op, 0)
            if a != b:
                changed_ops.append([op, str(b), str(a), _delta(b, a)])
        if changed_ops:
            lines.append("")
            lines += format_table(["op type", "before", "after", "change"], changed_ops)
        active = [p for p in self.passes if p.modified_runs or p.seconds > 0.05]
        if active:
            lines.append("")
            lines += format_table(
                ["pass", "runs", "changed", "time (s)", "statistics"],
                [
                    [
                        p.name,
                        str(p.runs),
                        str(p.modified_runs),
                        f"{p.seconds:.3f}",
                        ", ".join(f"{k}={_fmt(v)}" for k, v in p.stats.items() if v) or "-",
                    ]
                    for p in active
                ],
                left=(4,),
            )
        if self.rule_trace is not None and self.rule_trace.hits:
            lines.append("")
            lines.append(
                "fusions: " + ", ".join(f"{rule} x{n}" for rule, n in sorted(self.rule_trace.hits.items(), key=lambda kv: -kv[1]))
            )
        if self.quantization is not None:
            lines.append("")
            lines += self.quantization.summary_lines()
        for part in self.compression:
            lines.append("")
            lines += part.summary_lines()
        if self.pruning is not None:
            lines.append("")
            lines += self.pruning.summary_lines()
        if self.measured is not None:
            lines.append("")
            lines.append(self.measured.line())
        if self.verified is not None:
            lines.append("")
            if not self.verified:
                lines.append("verification: FAILED")
            elif self.verification.startswith("lossy"):
                lines.append("verification: within the lossy budget")
            else:
                lines.append("verification: outputs match")
            if self.verification:
                lines.append(f"  ({self.verification})")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g}"
    v = int(v)
    if abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def _delta(before: float, after: float) -> str:
    if before == after:
        return "="
    d = after - before
    pct = f" ({d / before * 100:+.1f}%)" if before else ""
    return f"{'+' if d > 0 else ''}{_fmt(d)}{pct}"
