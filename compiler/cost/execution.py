"""What the cost model says about running a model on a target.

* :func:`provider_flops`: the FLOPs each provider of a :class:`~onnxforge.runtime.placement.Placement`
  took, and the share that fell back to the CPU (``lower`` warns above
  :data:`FALLBACK_WARN_SHARE`: a GPU target doing 5% of its arithmetic on the CPU usually
  spends most of its time there, plus the copies in and out).
* :func:`parallel_share`: how much of the work lies off the critical path of the graph, the
  most that running independent nodes at once (onnxruntime's parallel execution mode) could
  overlap. ``tune`` does not try the parallel mode below 10%
  (:data:`onnxforge.runtime.tune.PARALLEL_MIN_SHARE`).
* :func:`thread_speedup`: Amdahl's estimate of ``threads`` intra-op threads, counting as
  parallel only the nodes big enough to split ``threads`` ways (:data:`GRAIN_FLOPS` each).
  ``tune`` drops thread counts predicted to gain less than 10% over the next smaller one
  (:data:`onnxforge.runtime.tune.THREAD_MIN_GAIN`).

FLOPs do not depend on the latency profile; these use a fixed one so that nothing is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from onnxforge.cost.analysis import CostReport, analyze
from onnxforge.ir import Model
from onnxforge.runtime.placement import Placement
from onnxforge.runtime.target import CPU_EP
from onnxforge.runtime.tune import Hints, thread_counts

#: Above this share of FLOPs on the CPU, a GPU target's placement gets a warning.
FALLBACK_WARN_SHARE = 0.05
#: Work one intra-op thread needs per node for the split to pay (about 10 us of one core).
GRAIN_FLOPS = 200_000


def cost_report(model: Model, *, shapes: Mapping[str, tuple[int, ...]] | None = None, dims: Mapping[str, int] | None = None) -> CostReport:
    """The cost report these figures are computed from (static shapes, no probe run, a fixed
    profile: only FLOPs and the graph are used)."""
    return analyze(model, shapes=shapes, dims=dims, target="h100", reorder=False, probe=False)


def node_flops(report: CostReport) -> dict[str, int]:
    """FLOPs per model run of each node, by name (nodes of subgraphs under their own names)."""
    out: dict[str, int] = {}
    for n in report.nodes:
        if n.counted:
            out[n.name] = out.get(n.name, 0) + n.flops * n.runs
    return out


@dataclass
class ProviderFlops:
    """FLOPs per provider of a placement. ``cpu_share``: FLOPs on the CPU provider over all
    FLOPs onnxruntime runs (nodes it folded at load time are not counted). ``warn``: the
    target's first provider is not the CPU and ``cpu_share`` is above the threshold.
    ``unattributed``: nodes onnxruntime made (not in the cost report; FLOPs unknown)."""

    by_provider: dict[str, int]
    total: int
    cpu_share: float
    warn: bool
    threshold: float = FALLBACK_WARN_SHARE
    top_cpu_nodes: list[tuple[str, int]] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)

    def message(self, target: str) -> str:
        top = ", ".join(f"{n} ({_flops_text(f)})" for n, f in self.top_cpu_nodes[:5])
        return (
            f"{self.cpu_share * 100:.1f}% of the FLOPs of --target {target} fall back to {CPU_EP} "
            f"(more than {self.threshold * 100:.0f}%): {top}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "by_provider": dict(self.by_provider),
            "total": self.total,
            "cpu_share": self.cpu_share,
            "threshold": self.threshold,
            "warn": self.warn,
            "top_cpu_nodes": [{"name": n, "flops": f} for n, f in self.top_cpu_nodes],
            "unattributed": list(self.unattributed),
        }


def _flops_text(f: float) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if f >= scale:
            return f"{f / scale:.1f} {unit}"
    return f"{f:.0f} FLOP"


def provider_flops(placement: Placement, flops: Mapping[str, int], *, threshold: float = FALLBACK_WARN_SHARE) -> ProviderFlops:
    """FLOPs per provider of ``placement``, from ``flops`` (:func:`node_flops`)."""
    by: dict[str, int] = {}
    cpu_nodes: list[tuple[str, int]] = []
    unattributed = []
    for n in placement.nodes:
        if n.name not in flops:
            unattributed.append(n.name)
            continue
        by[n.provider] = by.get(n.provider, 0) + flops[n.name]
        if n.provider == CPU_EP and flops[n.name]:
            cpu_nodes.append((n.name, flops[n.name]))
    total = sum(by.values())
    share = by.get(CPU_EP, 0) / total if total else 0.0
    primary = placement.providers[0] if placement.providers else CPU_EP
    cpu_nodes.sort(key=lambda x: -x[1])
    return ProviderFlops(by, total, share, primary != CPU_EP and share > threshold, threshold, cpu_nodes[:10], unattributed)


def parallel_share(model: Model, report: CostReport) -> float:
    """1 - (FLOPs on the heaviest dependency chain of the main graph) / (all its FLOPs): 0 for a
    chain, approaching 1 for many independent branches of equal work."""
    flops = {n.name: n.flops * n.runs for n in report.nodes if n.graph == "main"}
    g = nx.DiGraph()
    nodes = list(model.graph.nodes)
    for i, node in enumerate(nodes):
        g.add_node(i, w=flops.get(node.name, 0))
    index = {id(node): i for i, node in enumerate(nodes)}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            p = v.producer if v is not None else None
            if p is not None and id(p) in index:
                g.add_edge(index[id(p)], i)
    total = sum(w for _, w in g.nodes(data="w"))
    if total <= 0:
        return 0.0
    best: dict[int, int] = {}
    for i in nx.topological_sort(g):
        best[i] = g.nodes[i]["w"] + max((best[p] for p in g.predecessors(i)), default=0)
    return 1.0 - max(best.values()) / total


def thread_speedup(report: CostReport, threads: int, *, grain: int = GRAIN_FLOPS) -> float:
    """Predicted speed-up of ``threads`` intra-op threads over one (Amdahl, per node: a node
    splits only into pieces of at least ``grain`` FLOPs)."""
    total = 0.0
    time = 0.0
    for n in report.nodes:
        if not n.counted:
            continue
        f = float(n.flops * n.runs)
        total += f
        ways = max(1, min(threads, int(n.flops // grain) if n.flops else 1))
        time += f / ways
    return total / time if time > 0 else 1.0


def tune_hints(model: Model, report: CostReport, cores: int) -> Hints:
    """The figures ``tune`` prunes its grid with, for ``cores`` cores."""
    return Hints(parallel_share(model, report), {t: thread_speedup(report, t) for t in thread_counts(cores)})
