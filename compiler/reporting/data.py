"""Every number the HTML report shows, as one JSON-ready dict (written beside the page as
``NAME.json``): the plain report (:meth:`onnxforge.report.Report.to_dict`) plus per-layer costs
before/after, the graph before/after (nodes added and removed), the pass timeline, and latency
(estimated by the cost model; measured when a pass measured it).

The page is rendered from this dict alone, so what the page shows and what the JSON holds are
the same numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any

from onnxforge.report import Report
from onnxforge.reporting.blocks import block_summaries
from onnxforge.reporting.sketch import GraphSketch

#: ``schema`` of the dict; bump when a key changes meaning.
SCHEMA = "onnxforge.report/1"
#: Nodes listed under ``graph.removed``/``graph.added`` (their counts are always complete).
MAX_LISTED = 500


def report_data(report: Report, *, model: str = "", output: str = "") -> dict[str, Any]:
    """The HTML report's numbers for ``report`` (``model``/``output``: the file names shown)."""
    d: dict[str, Any] = {"schema": SCHEMA, "model": model, "output": output}
    d.update(report.to_dict())
    d["layers"] = {"before": _layers(report.cost_nodes_before), "after": _layers(report.cost_nodes_after)}
    d["layers"]["renamed"] = renamed_layers(d["layers"]["before"], d["layers"]["after"])
    d["graph"] = _graph(report.sketch_before, report.sketch_after, d["layers"])
    d["timeline"] = [
        {"name": s.name, "start_s": round(s.start, 6), "end_s": round(s.end, 6), "modified": s.modified} for s in report.spans
    ]
    d["latency"] = _latency(report)
    return d


def _layers(nodes: list[Any]) -> list[dict[str, Any]]:
    """Nodes with work or weights, in graph order: FLOPs/MACs count executions (``runs``, an
    uncounted If branch is 0), parameters count storage."""
    out = []
    for n in nodes:
        runs = n.runs if n.counted else 0
        if not (n.flops * runs or n.params):
            continue
        out.append(
            {
                "name": n.name or n.op,
                "op_type": n.op,
                "graph": n.graph,
                "flops": n.flops * runs,
                "macs": n.macs * runs,
                "params": n.params,
                "weight_bytes": n.weight_bytes,
                "est_latency_ms": round(n.est_ms * runs, 6),
            }
        )
    return out


#: A name the compiler made unique by appending ``__<n>`` (``Conv`` -> ``Conv__1``).
_UNIQUE_SUFFIX = re.compile(r"^(.+?)(?:__\d+)+$")


def renamed_layers(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, str]:
    """After-layer name -> before-layer name, for layers a rewrite replaced under a derived name
    (``Conv__1`` for ``Conv``, fused with its BatchNormalization) whose original is gone."""
    names_before = {la["name"] for la in before}
    names_after = {la["name"] for la in after}
    out: dict[str, str] = {}
    taken: set[str] = set()
    for la in after:
        m = _UNIQUE_SUFFIX.match(la["name"])
        if la["name"] in names_before or m is None:
            continue
        base = m.group(1)
        if base in names_before and base not in names_after and base not in taken:
            out[la["name"]] = base
            taken.add(base)
    return out


def _graph(before: GraphSketch | None, after: GraphSketch | None, layers: dict[str, Any]) -> dict[str, Any]:
    """Both sketches, the nodes removed and added (by key), and per-block summaries when either
    graph is too large to draw."""
    if before is None or after is None:
        return {}
    kb, ka = before.keys(), after.keys()
    removed = [n.key for n in before.nodes if n.key not in ka]
    added = [n.key for n in after.nodes if n.key not in kb]
    d: dict[str, Any] = {
        "before": before.to_dict(),
        "after": after.to_dict(),
        "removed_count": len(removed),
        "added_count": len(added),
        "removed": removed[:MAX_LISTED],
        "added": added[:MAX_LISTED],
    }
    if not (before.drawable and after.drawable):
        d["blocks"] = block_summaries(
            [(n.name, n.op_type) for n in before.nodes],
            [(n.name, n.op_type) for n in after.nodes],
            layers["before"],
            layers["after"],
        )
    return d


def _latency(report: Report) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if report.cost_before is not None and report.cost_after is not None:
        out["estimated_ms"] = {
            "before": round(report.cost_before.est_latency_ms, 4),
            "after": round(report.cost_after.est_latency_ms, 4),
            "profile": report.cost_target,
            "source": "cost model (roofline)",
        }
    m = report.measured
    if m is not None:
        out["measured_ms"] = {
            "before": round(m.before_ms, 4),
            "after": round(m.after_ms, 4),
            "source": f"compile --measure: onnxruntime {m.target}, p50 of {m.rounds} interleaved rounds on {m.inputs}",
        }
    pr = report.pruning
    if pr is not None and pr.latency_ms is not None and "measured_ms" not in out:
        out["measured_ms"] = {
            "before": round(pr.latency_ms[0], 4),
            "after": round(pr.latency_ms[1], 4),
            "source": "pruning pass (onnxruntime, this machine)" + (f"; {pr.latency_note}" if pr.latency_note else ""),
        }
    q = report.quantization
    if q is not None and q.speedup is not None and math.isfinite(q.speedup):
        out["measured_speedup"] = {
            "value": round(q.speedup, 3),
            "source": "int8 speed guard (onnxruntime, ORT_ENABLE_ALL, 1 thread, this machine)",
        }
    return out
