"""The HTML report page: one standalone file (inline CSS and SVG, no script, nothing fetched)
rendered from :func:`onnxforge.reporting.data.report_data`'s dict alone.

Sections, each shown only when its numbers exist: the headline figures before/after, per-layer
FLOPs and parameters, per-layer sparsity (pruning), per-layer SQNR (int8; weight sharing's
weight SQNR), latency (estimated, and measured when a pass measured it), the pass timeline and
table, the graph before/after (drawn when small, per-block summaries and the heaviest layers
when large), op types before/after, fusions and notes.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from onnxforge.reporting.graph_svg import graph_svg
from onnxforge.reporting.svg import Pair, Span, bars, human, paired_bars, timeline

#: Per-layer FLOPs/parameter charts show at most this many layers (the heaviest); the JSON has
#: them all.
MAX_CHART_ROWS = 40
#: Sparsity and SQNR charts show at most this many layers (SQNR: the worst).
MAX_METRIC_ROWS = 120

STYLE = """
:root { --before: #7b8fc7; --after: #f08a4b; --ink: #1f2430; --muted: #667085; --line: #e4e7ec;
  --bg: #f7f8fa; --card: #ffffff; --good: #1a7f37; --bad: #c62828; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2430; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 20px; font-weight: 600; }
header .sub { color: #c9cfdb; font-size: 13px; }
header .sub b { color: #fff; font-weight: 600; }
main { max-width: 1640px; margin: 0 auto; padding: 20px 32px 48px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 0 0 18px; }
h2 { font-size: 16px; margin: 0 0 4px; }
p.hint { color: var(--muted); margin: 0 0 10px; font-size: 12.5px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(235px, 1fr)); gap: 12px; margin-bottom: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 18px; font-weight: 600; margin-top: 2px; white-space: nowrap; }
.card .d { font-size: 12.5px; margin-top: 2px; }
.down { color: var(--good); } .up { color: var(--bad); } .same { color: var(--muted); }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(620px, 1fr)); gap: 18px; margin-bottom: 18px; }
svg.chart { max-width: 100%; height: auto; }
.grid2 > section { margin: 0; min-width: 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.l, th.l { text-align: left; }
td.wrap { white-space: normal; text-align: left; max-width: 520px; }
.scroll { overflow: auto; max-height: 820px; border: 1px solid var(--line); border-radius: 6px; background: #fcfcfd; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.pair h3 { font-size: 13px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.ok { background: #dcfce7; color: var(--good); } .badge.fail { background: #fde2e1; color: var(--bad); }
.badge.none { background: #eef0f4; color: var(--muted); }
ul.notes { margin: 6px 0 0; padding-left: 18px; color: var(--muted); }
svg text { font: 11px -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: var(--ink); }
svg .legend { font-size: 11.5px; } svg .value { fill: var(--muted); font-size: 10px; } svg .note { fill: var(--muted); font-style: italic; }
.bar-before { fill: var(--before); } .bar-after { fill: var(--after); } .bar-metric { fill: #5b8def; }
.mark { fill: var(--ink); } .axis { stroke: #98a2b3; stroke-width: 1; } .stripe { fill: #f5f6f8; }
.run-changed { fill: var(--after); stroke: #c1632a; stroke-width: .6; } .run-idle { fill: #fff; stroke: var(--before); stroke-width: 1; }
svg.graph .edge { fill: none; stroke: #98a2b3; stroke-width: 1.1; }
svg.graph .node rect { stroke: #667085; stroke-width: 1; }
svg.graph .io rect { fill: #fff; stroke: #98a2b3; stroke-dasharray: 3 2; }
svg.graph .io text { fill: var(--muted); }
.op-conv rect { fill: #dbe7ff; } .op-matmul rect { fill: #e9defc; } .op-norm rect { fill: #d9f2ec; }
.op-act rect { fill: #fff1cc; } .op-quant rect { fill: #ffe0d1; } .op-move rect { fill: #eceff3; } .op-other rect { fill: #f4f4f5; }
svg.graph .removed rect { stroke: var(--bad); stroke-width: 2.6; fill: #fde2e1; }
svg.graph .added rect { stroke: var(--good); stroke-width: 2.6; fill: #dcfce7; }
.key-removed { color: var(--bad); font-weight: 600; } .key-added { color: var(--good); font-weight: 600; }
"""


def render_page(data: dict[str, Any]) -> str:
    """The whole page for ``data`` (:func:`~onnxforge.reporting.data.report_data`)."""
    parts = [
        _cards(data),
        _totals(data),
        _grid(_layer_charts(data)),
        _grid(_sparsity(data) + _sqnr(data) + _latency(data)),
        _passes(data),
        _graph(data),
        _op_types(data),
        _notes(data),
    ]
    title = f"onnxforge report: {data.get('model') or 'model'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + _header(data)
        + "<main>"
        + "".join(p for p in parts if p)
        + "</main></body></html>\n"
    )


def _grid(sections: str) -> str:
    return f'<div class="grid2">{sections}</div>' if sections else ""


# -- header and headline figures ------------------------------------------------------------
def _header(d: dict[str, Any]) -> str:
    verified = d.get("verified")
    badge = (
        '<span class="badge none">not verified</span>'
        if verified is None
        else '<span class="badge ok">verified</span>'
        if verified
        else '<span class="badge fail">verification failed</span>'
    )
    src = escape(d.get("model") or "(model)")
    out = escape(d.get("output") or "")
    arrow = f" → <b>{out}</b>" if out else ""
    return (
        f"<header><h1>onnxforge compile report</h1><div class=\"sub\"><b>{src}</b>{arrow} · pipeline "
        f"<b>{escape(str(d.get('pipeline', '')))}</b> · {d.get('seconds', 0):.2f} s · {badge}</div></header>"
    )


def _headline(d: dict[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
    """(name, before, after, unit) of the headline figures."""
    b, a = d["before"], d["after"]
    rows: list[tuple[str, float | None, float | None, str]] = [
        ("nodes", b["nodes"], a["nodes"], ""),
        ("weight bytes", b["initializer_bytes"], a["initializer_bytes"], "B"),
    ]
    cost = d.get("cost")
    if cost:
        cb, ca = cost["before"], cost["after"]
        rows = [
            ("FLOPs", cb["flops"], ca["flops"], ""),
            ("MACs", cb["macs"], ca["macs"], ""),
            ("parameters", cb["params"], ca["params"], ""),
            *rows,
            ("peak activation bytes", cb["peak_activation_bytes"], ca["peak_activation_bytes"], "B"),
            (f"est. latency ({cost['target']})", cb["est_latency_ms"], ca["est_latency_ms"], "ms"),
        ]
    measured = d.get("latency", {}).get("measured_ms")
    if measured:
        rows.append(("measured latency", measured["before"], measured["after"], "ms"))
    return rows


def _change(b: float | None, a: float | None) -> str:
    if b is None or a is None:
        return '<span class="same">-</span>'
    if a == b:
        return '<span class="same">unchanged</span>'
    pct = f" ({(a - b) / b * 100:+.1f}%)" if b else ""
    cls = "down" if a < b else "up"
    return f'<span class="{cls}">{"▼" if a < b else "▲"} {escape(_fmt(abs(a - b)))}{pct}</span>'


def _fmt(v: float, unit: str = "") -> str:
    if unit == "ms":
        return f"{v:.3g} ms"
    if unit == "B":
        return human(v, "B")
    return human(v)


def _cards(d: dict[str, Any]) -> str:
    cards = []
    for name, b, a, unit in _headline(d):
        cards.append(
            f'<div class="card" title="{escape(name)}: {_exact(b)} → {_exact(a)}"><div class="k">{escape(name)}</div>'
            f'<div class="v">{escape(_fmt(b, unit) if b is not None else "-")} → {escape(_fmt(a, unit) if a is not None else "-")}</div>'
            f'<div class="d">{_change(b, a)}</div></div>'
        )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _totals(d: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="l">{escape(name)}</td><td>{_exact(b)}</td><td>{_exact(a)}</td><td>{_change(b, a)}</td></tr>'
        for name, b, a, _ in _headline(d)
    )
    hint = (
        f"Cost model on the {escape(d['cost']['target'])} profile (docs/COST_MODEL.md)."
        if d.get("cost")
        else "No cost estimate for this run (see the notes): FLOPs, parameters and latency are not shown."
    )
    if d.get("verification"):
        hint += f" Verification: {escape(d['verification'])}."
    return (
        f'<section><h2>Totals</h2><p class="hint">{hint}</p><table><tr><th class="l"></th><th>before</th><th>after</th>'
        f"<th>change</th></tr>{rows}</table></section>"
    )


# -- per-layer charts -----------------------------------------------------------------------
def _layer_pairs(d: dict[str, Any], key: str) -> tuple[list[Pair], int]:
    """Before/after rows of ``key`` per layer, matched by name (and by :func:`renamed_layers`),
    the heaviest :data:`MAX_CHART_ROWS` kept in graph order; and how many rows there were."""
    before = {la["name"]: la for la in d["layers"]["before"]}
    after = {la["name"]: la for la in d["layers"]["after"]}
    renamed = d["layers"].get("renamed", {})
    into = {old: new for new, old in renamed.items()}
    pairs = []
    for n in dict.fromkeys([*before, *after]):
        if n in renamed:
            continue  # shown on its original's row
        b = before.get(n)
        a = after.get(into.get(n, n))
        vb = b[key] if b else None
        va = a[key] if a else None
        if not (vb or va):
            continue
        label = f"{n} → {into[n]}" if n in into else n
        op = f"{b['op_type']} → {a['op_type']}" if a and b and a["op_type"] != b["op_type"] else (a or b or {}).get("op_type", "")
        pairs.append(Pair(label, vb, va, f"{label} ({op})"))
    total = len(pairs)
    if total > MAX_CHART_ROWS:
        keep = {id(p) for p in sorted(pairs, key=lambda p: -max(p.before or 0, p.after or 0))[:MAX_CHART_ROWS]}
        pairs = [p for p in pairs if id(p) in keep]
    return pairs, total


def _op_pairs(d: dict[str, Any]) -> list[Pair]:
    """FLOPs per op type before/after, heaviest first."""
    sums: dict[str, list[float]] = {}
    for i, side in enumerate(("before", "after")):
        for la in d["layers"][side]:
            sums.setdefault(la["op_type"], [0.0, 0.0])[i] += la["flops"]
    rows = sorted(sums.items(), key=lambda kv: -max(kv[1]))
    return [Pair(op, b, a, op) for op, (b, a) in rows if b or a][:MAX_CHART_ROWS]


def _layer_charts(d: dict[str, Any]) -> str:
    if not d["layers"]["before"]:
        return ""
    out = []
    ops = _op_pairs(d)
    if ops:
        out.append(
            '<section><h2>FLOPs per op type</h2><p class="hint">Every layer\'s FLOPs summed by op type, before and after.</p>'
            + paired_bars(ops, label="FLOPs per op type")
            + "</section>"
        )
    for key, title in (("flops", "FLOPs per layer"), ("params", "Parameters per layer")):
        pairs, total = _layer_pairs(d, key)
        if not pairs:
            continue
        shown = (
            f"the {len(pairs)} heaviest of {total} layers, in graph order"
            if total > len(pairs)
            else f"all {total} layers with {'work' if key == 'flops' else 'weights'}, in graph order"
        )
        out.append(
            f'<section><h2>{title}</h2><p class="hint">Before and after, matched by node name; a layer a rewrite replaced '
            f"under a derived name (Conv → Conv__1) shares its original's row ({shown}; every layer is in the JSON).</p>"
            + paired_bars(pairs, label=title)
            + "</section>"
        )
    return "".join(out)


def _sparsity(d: dict[str, Any]) -> str:
    pr = d.get("pruning")
    if not pr or not pr.get("layers"):
        return ""
    layers = pr["layers"]
    rows = [
        (la["name"], la["sparsity"] * 100, f"{la['name']} ({la['op_type']}): {la['sparsity']:.1%} zero of {la['params']:,} weights, "
         f"target {la['target_sparsity']:.0%}" + (f"; {la['reason']}" if la.get("reason") else ""))
        for la in layers
    ]
    marks: list[float | None] = [la["target_sparsity"] * 100 for la in layers]
    shown = f" The first {MAX_METRIC_ROWS} of {len(rows)} layers (all in the JSON)." if len(rows) > MAX_METRIC_ROWS else ""
    rows, marks = rows[:MAX_METRIC_ROWS], marks[:MAX_METRIC_ROWS]
    return (
        f'<section id="sparsity"><h2>Sparsity per layer</h2><p class="hint">{escape(pr["method"])}, scores {escape(pr["score"])}: '
        f"{pr['sparsity']:.1%} of all weights zero ({pr['pruned_layers_sparsity']:.1%} over the pruned layers). "
        f"Bars: fraction of each layer's weights that are zero; ticks: the target asked of it; hover for why less.{shown}</p>"
        + bars(rows, fmt=lambda v: f"{v:.1f}%", lo=0, hi=100, marks=marks, mark_label="target", bar_class="bar-after", label="sparsity")
        + "</section>"
    )


def _db(v: Any) -> float:
    return float(v)


def _sqnr(d: dict[str, Any]) -> str:
    out = []
    q = d.get("quantization")
    if q and q.get("layer_sqnr_db"):
        errs = q["layer_sqnr_db"]
        shown = ""
        if len(errs) > MAX_METRIC_ROWS:  # the worst layers, in graph order
            worst = {id(e) for e in sorted(errs, key=lambda e: _db(e["sqnr_db"]))[:MAX_METRIC_ROWS]}
            shown = f" The {MAX_METRIC_ROWS} worst of {len(errs)} layers (all in the JSON)."
            errs = [e for e in errs if id(e) in worst]
        rows = [
            (e["node"], _db(e["sqnr_db"]), f"{e['node']} ({e['op_type']}): output {e['sqnr_db']} dB, input {e['input_sqnr_db']} dB")
            for e in errs
        ]
        marks: list[float | None] = [_db(e["input_sqnr_db"]) for e in errs]
        hi = max([v for _, v, _ in rows if math.isfinite(v)] + [m for m in marks if m is not None and math.isfinite(m)] + [1.0])
        out.append(
            f'<section id="sqnr"><h2>Quantization SQNR per layer (int8)</h2><p class="hint">Signal-to-quantization-noise ratio of each '
            f"quantized layer's output against the float model, on {escape(q['budget']['data'] or 'held-out data')} "
            f"(higher is better); ticks: the SQNR of its input, so the gap is what the layer itself adds.{shown}</p>"
            + bars(rows, fmt=lambda v: f"{v:.1f} dB", lo=0, hi=hi * 1.05, marks=marks, mark_label="input SQNR", bar_class="bar-metric", label="SQNR")
            + "</section>"
        )
    for part in d.get("compression", []):
        layers = part.get("layers") if isinstance(part, dict) else None
        if not layers or "weight_sqnr_db" not in layers[0]:
            continue
        rows = [
            (la["name"], _db(la["weight_sqnr_db"]) if la["weight_sqnr_db"] is not None else math.inf,
             f"{la['name']}: {la['bits']} bits, weight SQNR {la['weight_sqnr_db']} dB")
            for la in layers
        ][:MAX_METRIC_ROWS]
        out.append(
            '<section><h2>Weight SQNR per layer (weight sharing)</h2><p class="hint">SQNR of each shared weight against '
            "the original (higher is better).</p>"
            + bars(rows, fmt=lambda v: f"{v:.1f} dB", lo=0, bar_class="bar-metric", label="weight SQNR")
            + "</section>"
        )
    return "".join(out)


def _latency(d: dict[str, Any]) -> str:
    lat = d.get("latency") or {}
    pairs, notes = [], []
    est = lat.get("estimated_ms")
    if est:
        pairs.append(Pair(f"estimated ({est['profile']})", est["before"], est["after"]))
        notes.append(f"estimated: {escape(est['source'])}")
    meas = lat.get("measured_ms")
    if meas:
        pairs.append(Pair("measured", meas["before"], meas["after"]))
        notes.append(f"measured: {escape(meas['source'])}")
    speed = lat.get("measured_speedup")
    if speed:
        notes.append(f"measured speed-up {speed['value']:.2f}× ({escape(speed['source'])})")
    if not pairs and not notes:
        return ""
    chart = paired_bars(pairs, fmt=lambda v: f"{v:.4g} ms", label="latency") if pairs else ""
    return f'<section id="latency"><h2>Latency</h2><p class="hint">{"; ".join(notes)}.</p>{chart}</section>'


# -- passes ---------------------------------------------------------------------------------
def _passes(d: dict[str, Any]) -> str:
    spans = [Span(s["name"], s["start_s"], s["end_s"], s["modified"]) for s in d.get("timeline", [])]
    rows = "".join(
        f'<tr><td class="l">{escape(p["name"])}</td><td>{p["runs"]}</td><td>{p["modified_runs"]}</td>'
        f'<td>{p["seconds"] * 1000:.1f}</td><td class="wrap">{escape(_stats(p["stats"]))}</td></tr>'
        for p in d["passes"]
    )
    chart = timeline(spans) if spans else ""
    hits = (d.get("rules") or {}).get("hits") or {}
    fusions = (
        '<p class="hint">Rewrite rules that fired: '
        + ", ".join(f"{escape(k)} ×{v}" for k, v in sorted(hits.items(), key=lambda kv: -kv[1]))
        + "</p>"
        if hits
        else ""
    )
    return (
        f'<section id="passes"><h2>Pass timeline</h2><p class="hint">Every pass run in order, {d.get("seconds", 0):.2f} s in all '
        "(the timeline covers the passes; loading, cost estimates and verification are outside it).</p>"
        f"{chart}{fusions}<table><tr><th class=\"l\">pass</th><th>runs</th><th>changed</th><th>time (ms)</th>"
        f'<th class="l">statistics</th></tr>{rows}</table></section>'
    )


def _stats(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_exact(v)}" for k, v in stats.items() if v) or "-"


# -- graph ----------------------------------------------------------------------------------
def _graph(d: dict[str, Any]) -> str:
    g = d.get("graph") or {}
    if not g:
        return ""
    b, a = g["before"], g["after"]
    summary = (
        f'{b["nodes"]} → {a["nodes"]} top-level nodes; <span class="key-removed">{g["removed_count"]} removed</span>, '
        f'<span class="key-added">{g["added_count"]} added</span> (matched by node name)'
    )
    if b["drawable"] and a["drawable"]:
        removed, added = set(g["removed"]), set(g["added"])
        return (
            f'<section id="graph"><h2>Graph before and after</h2><p class="hint">{summary}. Removed nodes are outlined red on the '
            "left, added ones green on the right; hover a node for its name and tensors.</p>"
            '<div class="pair"><div><h3>before</h3><div class="scroll">'
            + graph_svg(b["graph"], highlight=removed, highlight_class="removed", label="graph before")
            + '</div></div><div><h3>after</h3><div class="scroll">'
            + graph_svg(a["graph"], highlight=added, highlight_class="added", label="graph after")
            + "</div></div></div></section>"
        )
    return _blocks(g, summary) + _top_layers(d)


def _blocks(g: dict[str, Any], summary: str) -> str:
    blocks = g.get("blocks") or {}
    under = f" below {escape(blocks['prefix'])}/" if blocks.get("prefix") else ""
    rows = []
    for r in blocks.get("rows", []):
        ops = ", ".join(f"{op} {x}→{y}" for op, (x, y) in list(r["op_changes"].items())[:6])
        if len(r["op_changes"]) > 6:
            ops += f", … {len(r['op_changes']) - 6} more"
        rows.append(
            f'<tr><td class="l">{escape(r["block"])}</td><td>{r["nodes_before"]}</td><td>{r["nodes_after"]}</td>'
            f'<td>{escape(human(r["flops_before"]))}</td><td>{escape(human(r["flops_after"]))}</td>'
            f'<td>{escape(human(r["params_before"]))}</td><td>{escape(human(r["params_after"]))}</td>'
            f'<td class="wrap">{escape(ops) or "-"}</td></tr>'
        )
    return (
        f'<section id="graph"><h2>Blocks before and after</h2><p class="hint">{summary}. The graph is too large to draw; nodes are '
        f"grouped by the first {blocks.get('depth', 1)} scope(s) of their names{under}.</p><div class=\"scroll\"><table>"
        '<tr><th class="l">block</th><th>nodes before</th><th>after</th><th>FLOPs before</th><th>after</th>'
        '<th>params before</th><th>after</th><th class="l">op types changed (before→after)</th></tr>'
        + "".join(rows)
        + "</table></div></section>"
    )


def _top_layers(d: dict[str, Any], n: int = 15) -> str:
    cols = []
    for side in ("before", "after"):
        layers = sorted(d["layers"][side], key=lambda la: -la["flops"])[:n]
        if not layers:
            continue
        total = sum(la["flops"] for la in d["layers"][side]) or 1
        rows = "".join(
            f'<tr><td class="l">{escape(la["name"])}</td><td class="l">{escape(la["op_type"])}</td>'
            f'<td>{escape(human(la["flops"]))}</td><td>{la["flops"] / total:.1%}</td></tr>'
            for la in layers
        )
        cols.append(
            f'<div><h3>{side}</h3><table><tr><th class="l">layer</th><th class="l">op</th><th>FLOPs</th><th>share</th></tr>'
            f"{rows}</table></div>"
        )
    if not cols:
        return ""
    return f'<section><h2>Heaviest layers by FLOPs</h2><div class="pair">{"".join(cols)}</div></section>'


# -- op types and notes ---------------------------------------------------------------------
def _op_types(d: dict[str, Any]) -> str:
    b, a = d["before"]["op_types"], d["after"]["op_types"]
    ops = sorted(set(b) | set(a), key=lambda op: (-(b.get(op, 0) != a.get(op, 0)), -max(b.get(op, 0), a.get(op, 0)), op))
    rows = "".join(
        f'<tr><td class="l">{escape(op)}</td><td>{b.get(op, 0)}</td><td>{a.get(op, 0)}</td><td>{_change(b.get(op, 0), a.get(op, 0))}</td></tr>'
        for op in ops
    )
    return (
        '<section id="op-types"><h2>Op types</h2><p class="hint">Nodes per op type in every graph (subgraphs included); changed types first.</p>'
        f'<div class="scroll" style="max-height:420px"><table><tr><th class="l">op type</th><th>before</th><th>after</th>'
        f"<th>change</th></tr>{rows}</table></div></section>"
    )


def _notes(d: dict[str, Any]) -> str:
    notes = list(d.get("notes", []))
    for key in ("quantization", "pruning"):
        part = d.get(key) or {}
        notes += [f"{key}: {n}" for n in part.get("notes", [])]
    if not notes:
        return ""
    return '<section><h2>Notes</h2><ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></section>"


def _exact(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.6g}"
    if isinstance(v, (int, float)):
        return f"{int(v):,}"
    return str(v)
