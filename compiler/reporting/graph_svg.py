"""A small graph (:data:`onnxforge.reporting.sketch.MAX_DRAWN_NODES` nodes at most) drawn as
layered SVG: graph inputs on top, each node one row below its deepest producer (a node without
inputs, e.g. a ``Constant``, sits just above its first consumer), nodes in a row ordered by the
mean position of their neighbours (a few barycentre sweeps), outputs at the bottom. Nodes the
compilation removed or added are highlighted by the page's CSS classes ``removed``/``added``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from html import escape
from typing import Any

import networkx as nx

BOX_W, BOX_H = 112, 26
GAP_X, GAP_Y = 14, 30
PAD = 12

#: Fill class per op family (the rest is ``op-other``).
_FAMILIES = {
    "op-conv": ("Conv", "ConvTranspose", "FusedConv", "QLinearConv", "ConvInteger", "NchwcConv"),
    "op-matmul": ("MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "MatMulNBits", "Attention", "MultiHeadAttention"),
    "op-norm": ("BatchNormalization", "LayerNormalization", "SkipLayerNormalization", "InstanceNormalization", "GroupNormalization", "SimplifiedLayerNormalization"),
    "op-act": ("Relu", "Sigmoid", "Tanh", "Gelu", "FastGelu", "BiasGelu", "Softmax", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Erf", "QuickGelu"),
    "op-quant": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),
    "op-move": ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Shape", "Expand"),
}
_FAMILY_OF = {op: cls for cls, ops in _FAMILIES.items() for op in ops}


def _family(op: str) -> str:
    return _FAMILY_OF.get(op.rsplit("::", 1)[-1], "op-other")


def layout(graph: Mapping[str, Any]) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str]], dict[str, dict[str, Any]]]:
    """Row and column of every box (``n<i>`` nodes, ``in:<name>``/``out:<name>`` graph inputs
    and outputs), the edges, and what each box shows."""
    boxes: dict[str, dict[str, Any]] = {}
    producer: dict[str, str] = {}
    for name in graph.get("inputs", []):
        boxes[f"in:{name}"] = {"kind": "input", "label": name}
        producer[name] = f"in:{name}"
    for i, n in enumerate(graph.get("nodes", [])):
        boxes[f"n{i}"] = {"kind": "node", **n}
        for t in n.get("outputs", []):
            producer[t] = f"n{i}"
    edges: list[tuple[str, str]] = []
    for i, n in enumerate(graph.get("nodes", [])):
        for t in dict.fromkeys(n.get("inputs", [])):
            if t in producer:
                edges.append((producer[t], f"n{i}"))
    for name in graph.get("outputs", []):
        boxes[f"out:{name}"] = {"kind": "output", "label": name}
        if name in producer:
            edges.append((producer[name], f"out:{name}"))
    g = nx.DiGraph()
    g.add_nodes_from(boxes)
    g.add_edges_from(edges)
    order = list(nx.topological_sort(g)) if nx.is_directed_acyclic_graph(g) else list(boxes)
    row: dict[str, int] = {}
    for b in order:
        row[b] = max((row[p] + 1 for p in g.predecessors(b) if p in row), default=0)
    for b in order:  # sources that are not graph inputs: just above their first consumer
        if boxes[b]["kind"] == "node" and g.in_degree(b) == 0 and g.out_degree(b) > 0:
            row[b] = max(min(row[s] for s in g.successors(b)) - 1, 0)
    last = max(row.values(), default=0)
    for b in boxes:
        if boxes[b]["kind"] == "output":
            row[b] = max(row[b], last)
    rows: dict[int, list[str]] = {}
    for b in boxes:  # graph order first
        rows.setdefault(row[b], []).append(b)
    col = {b: i for r in rows.values() for i, b in enumerate(r)}
    for sweep in range(4):
        down = sweep % 2 == 0
        for r in sorted(rows, reverse=not down):
            def centre(b: str, down: bool = down) -> float:
                near = list(g.predecessors(b) if down else g.successors(b))
                return sum(col[x] for x in near) / len(near) if near else col[b]

            rows[r].sort(key=centre)
            for i, b in enumerate(rows[r]):
                col[b] = i
    return {b: (row[b], col[b]) for b in boxes}, edges, boxes


def graph_svg(graph: Mapping[str, Any], *, highlight: Collection[str] = (), highlight_class: str = "", label: str = "graph") -> str:
    """The drawing of ``graph`` (a sketch's ``graph`` dict); nodes whose ``key`` is in
    ``highlight`` get ``highlight_class``."""
    pos, edges, boxes = layout(graph)
    widths: dict[int, int] = {}
    for r, _ in pos.values():
        widths[r] = widths.get(r, 0) + 1
    widest = max(widths.values(), default=1)
    full = widest * (BOX_W + GAP_X) - GAP_X
    width = full + 2 * PAD
    height = (max(widths, default=0) + 1) * (BOX_H + GAP_Y) - GAP_Y + 2 * PAD

    def xy(b: str) -> tuple[float, float]:
        r, c = pos[b]
        offset = (full - (widths[r] * (BOX_W + GAP_X) - GAP_X)) / 2
        return PAD + offset + c * (BOX_W + GAP_X), PAD + r * (BOX_H + GAP_Y)

    body: list[str] = []
    for a, b in edges:
        (x1, y1), (x2, y2) = xy(a), xy(b)
        x1, y1, x2 = x1 + BOX_W / 2, y1 + BOX_H, x2 + BOX_W / 2
        mid = (y1 + y2) / 2
        body.append(f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"/>')
    for b, info in boxes.items():
        x, y = xy(b)
        if info["kind"] == "node":
            op = info["op_type"]
            cls = f"node {_family(op)}" + (f" {highlight_class}" if info["key"] in highlight else "")
            tip = f"{info['key']} ({op})\nin: {', '.join(info['inputs']) or '-'}\nout: {', '.join(info['outputs']) or '-'}"
            text = op.rsplit("::", 1)[-1]
            body.append(
                f'<g class="{cls}"><title>{escape(tip)}</title>'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="4"/>'
                f'<text x="{x + BOX_W / 2:.1f}" y="{y + 17:.1f}" text-anchor="middle">{escape(_clip(text, 16))}</text></g>'
            )
        else:
            body.append(
                f'<g class="io"><title>graph {info["kind"]} {escape(info["label"])}</title>'
                f'<rect x="{x:.1f}" y="{y + 3:.1f}" width="{BOX_W}" height="{BOX_H - 6}" rx="10"/>'
                f'<text x="{x + BOX_W / 2:.1f}" y="{y + 17:.1f}" text-anchor="middle">{escape(_clip(info["label"], 17))}</text></g>'
            )
    return (
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
