"""What pruning did, for ``ctx.records["prune"]`` and the compile report: per layer (or per
channel group) how much was pruned and, where less than asked, why; FLOPs and parameters before
and after (:mod:`onnxforge.cost`); the measured latency; the budget's figures on held-out data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from onnxforge.tables import format_table

#: Key of ``PassContext.records`` holding the :class:`PruningReport`.
REPORT_KEY = "prune"


@dataclass
class LayerPruning:
    """One layer's outcome. ``target``: the sparsity asked of it; ``sparsity``: the fraction of
    its weights that are zero afterwards; ``reason``: why it was pruned less than the global
    target (skipped, backed off for the budget, N:M does not fit), empty otherwise."""

    name: str
    op_type: str
    params: int
    target: float
    sparsity: float
    level: int = 0
    reason: str = ""
    nm_layout: bool | None = None
    tensorrt_sparse: bool | None = None
    flops: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "op_type": self.op_type,
            "params": self.params,
            "target_sparsity": round(self.target, 4),
            "sparsity": round(self.sparsity, 4),
            "level": self.level,
            "flops": self.flops,
        }
        if self.reason:
            d["reason"] = self.reason
        if self.nm_layout is not None:
            d["nm_layout"] = self.nm_layout
        if self.tensorrt_sparse is not None:
            d["tensorrt_sparse_eligible"] = self.tensorrt_sparse
        return d


@dataclass
class GroupPruning:
    """One channel group's outcome: channels before and after, the layers whose output channels
    it removes (``sources``) and whose inputs it shrinks (``sinks``), and why it was pruned less
    than asked (or not at all)."""

    id: int
    channels: int
    kept: int
    sources: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    level: int = 0
    reason: str = ""
    #: Entries of the producing axis per channel: 1, or an attention head's width.
    block: int = 1

    @property
    def removed(self) -> int:
        return self.channels - self.kept

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "group": self.id,
            "channels": self.channels,
            "kept": self.kept,
            "sources": self.sources,
            "sinks": self.sinks,
            "level": self.level,
            "block": self.block,
        }
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class PruningReport:
    """What a pruning pass did (module docstring)."""

    method: str
    score: str
    reconstruction: bool
    data: str = "none (magnitude only)"
    synthetic: bool = False
    calibration_samples: int = 0
    layers: list[LayerPruning] = field(default_factory=list)
    groups: list[GroupPruning] = field(default_factory=list)
    #: Nodes that are not prunable layers at all, and why.
    refused: dict[str, str] = field(default_factory=dict)
    flops_before: int | None = None
    flops_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None
    nonzero_params_before: int | None = None
    nonzero_params_after: int | None = None
    #: FLOPs when multiplications by a zero weight are skipped (unstructured: what a sparse
    #: kernel could save; onnxruntime's dense kernels do not).
    effective_flops_after: int | None = None
    latency_ms: tuple[float, float] | None = None
    latency_note: str = ""
    budget: str = "none"
    budget_data: str = ""
    budget_missed: list[str] = field(default_factory=list)
    output_cosine: dict[str, float] = field(default_factory=dict)
    output_sqnr: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[float, float] | None = None
    accuracy_data: str = ""
    #: Layers (or groups) the budget loop moved towards exact, in order.
    stepped: list[str] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # -- derived ----------------------------------------------------------------------------
    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over every Conv/Gemm/MatMul weight considered (pruned and
        skipped layers alike)."""
        total = sum(la.params for la in self.layers)
        zeros = sum(la.params * la.sparsity for la in self.layers)
        return zeros / total if total else 0.0

    @property
    def pruned_sparsity(self) -> float:
        """Fraction of zero weights over the layers that were pruned."""
        pruned = [la for la in self.layers if la.target > 0]
        total = sum(la.params for la in pruned)
        return sum(la.params * la.sparsity for la in pruned) / total if total else 0.0

    @property
    def speedup(self) -> float | None:
        if self.latency_ms is None or self.latency_ms[1] <= 0:
            return None
        return self.latency_ms[0] / self.latency_ms[1]

    @property
    def flops_ratio(self) -> float | None:
        if not self.flops_before or not self.flops_after:
            return None
        return self.flops_before / self.flops_after

    # -- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | str:
            return round(x, 4) if math.isfinite(x) else str(x)

        return {
            "method": self.method,
            "score": self.score,
            "reconstruction": self.reconstruction,
            "calibration_data": self.data,
            "calibration_samples": self.calibration_samples,
            "synthetic_calibration": self.synthetic,
            "sparsity": round(self.sparsity, 4),
            "pruned_layers_sparsity": round(self.pruned_sparsity, 4),
            "layers": [la.to_dict() for la in self.layers],
            "groups": [g.to_dict() for g in self.groups],
            "not_layers": self.refused,
            "flops": {"before": self.flops_before, "after": self.flops_after, "effective_after": self.effective_flops_after},
            "params": {
                "before": self.params_before,
                "after": self.params_after,
                "nonzero_before": self.nonzero_params_before,
                "nonzero_after": self.nonzero_params_after,
            },
            "latency_ms": None
            if self.latency_ms is None
            else {"before": round(self.latency_ms[0], 4), "after": round(self.latency_ms[1], 4), "note": self.latency_note},
            "budget": {"bounds": self.budget, "data": self.budget_data, "missed": self.budget_missed},
            "output_cosine": {k: num(v) for k, v in self.output_cosine.items()},
            "output_sqnr_db": {k: num(v) for k, v in self.output_sqnr.items()},
            "accuracy": None
            if self.accuracy is None
            else {"before": self.accuracy[0], "after": self.accuracy[1], "data": self.accuracy_data},
            "backed_off": self.stepped,
            "sensitivity_db": [{"name": n, "output_sqnr_db": num(v)} for n, v in self.sensitivity],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }

    def summary_lines(self, rows: int = 12) -> list[str]:
        lines = [
            f"pruning: {self.method}, scores {self.score}"
            + (", least-squares reconstruction" if self.reconstruction else "")
            + f"; calibration: {self.data}"
        ]
        if self.groups:
            prunable = [g for g in self.groups if not g.reason.startswith("not prunable")]
            chans = [g for g in prunable if g.block == 1]
            heads = [g for g in prunable if g.block > 1]
            total, removed = sum(g.channels for g in chans), sum(g.removed for g in chans)
            line = f"channel groups: {len(self.groups)} ({len(prunable)} prunable); removed {removed} of {total} prunable channels"
            line += f" ({removed / total:.1%})" if total else ""
            if heads:
                line += f", {sum(g.removed for g in heads)} of {sum(g.channels for g in heads)} attention heads"
            lines.append(line)
        else:
            pruned = [la for la in self.layers if la.target > 0]
            lines.append(
                f"sparsity {self.sparsity:.1%} of all {len(self.layers)} layers' weights "
                f"({self.pruned_sparsity:.1%} over the {len(pruned)} pruned layers)"
            )
        if self.flops_before is not None and self.flops_after is not None:
            line = f"FLOPs {self.flops_before:,} -> {self.flops_after:,}"
            if self.flops_ratio and self.flops_before != self.flops_after:
                line += f" ({self.flops_ratio:.2f}x fewer)"
            if self.effective_flops_after is not None and self.effective_flops_after != self.flops_after:
                line += f"; skipping zero weights: {self.effective_flops_after:,}"
            lines.append(line)
        if self.params_before is not None and self.params_after is not None:
            lines.append(
                f"parameters {self.params_before:,} -> {self.params_after:,}"
                + (
                    f"; non-zero {self.nonzero_params_before:,} -> {self.nonzero_params_after:,}"
                    if self.nonzero_params_before is not None and self.nonzero_params_after is not None
                    else ""
                )
            )
        if self.latency_ms is not None:
            sp = self.speedup
            lines.append(
                f"measured latency {self.latency_ms[0]:.3f} ms -> {self.latency_ms[1]:.3f} ms"
                + (f" ({sp:.2f}x)" if sp else "")
                + (f" [{self.latency_note}]" if self.latency_note else "")
            )
        if self.budget != "none":
            lines.append(f"budget ({self.budget}) measured on {self.budget_data}")
        for name, c in self.output_cosine.items():
            lines.append(f"output {name}: cosine {c:.5f}, SQNR {self.output_sqnr.get(name, math.nan):.1f} dB")
        if self.accuracy is not None:
            lines.append(
                f"accuracy: before {self.accuracy[0] * 100:.2f}%, after {self.accuracy[1] * 100:.2f}% on {self.accuracy_data}"
            )
        if self.budget_missed:
            lines.append("BUDGET MISSED: " + "; ".join(self.budget_missed))
        if self.stepped:
            lines.append("pruned less for the budget (most sensitive first): " + ", ".join(dict.fromkeys(self.stepped)))
        if self.groups:
            shown = sorted(self.groups, key=lambda g: -g.channels)[:rows]
            lines.append("")
            lines += format_table(
                ["group", "channels", "kept", "layers", "why less"],
                [
                    [str(g.id), str(g.channels), str(g.kept), _names(g.sources + g.sinks), g.reason or "-"]
                    for g in shown
                ],
                left=(3, 4),
            )
        else:
            shown_layers = self.layers[:rows]
            lines.append("")
            lines += format_table(
                ["layer", "op", "weights", "target", "sparsity", "why less"],
                [
                    [la.name, la.op_type, f"{la.params:,}", f"{la.target:.0%}", f"{la.sparsity:.1%}", la.reason or "-"]
                    for la in shown_layers
                ],
                left=(0, 1, 5),
            )
            if len(self.layers) > rows:
                lines.append(f"... and {len(self.layers) - rows} more layers (--report FILE.json lists all)")
        lines += [f"note: {n}" for n in self.notes]
        return lines


def _names(names: list[str], limit: int = 3, width: int = 48) -> str:
    shown = ", ".join(n if len(n) <= width else "..." + n[-(width - 3) :] for n in names[:limit])
    return shown + (f" +{len(names) - limit}" if len(names) > limit else "")


__all__ = ["REPORT_KEY", "GroupPruning", "LayerPruning", "PruningReport"]
