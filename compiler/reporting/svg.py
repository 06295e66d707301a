"""Inline SVG charts for the HTML report, drawn in Python (no script, nothing fetched): paired
before/after bars, single bars with an optional reference line, and the pass timeline.

Each function returns one ``<svg>`` element as a string; values show as text beside the bars
and, with their exact figures, as tooltips (``<title>``). Colours come from CSS classes the page
defines (:data:`onnxforge.reporting.page.STYLE`), so the charts follow its theme.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

#: Chart width in pixels (the page's content column).
WIDTH = 760
_LABEL = 250  # left margin for row labels
_VALUE = 90  # right margin for value text
_ROW = 20
_BAR = 13  # paired bars: one bar and its gap


@dataclass(frozen=True)
class Pair:
    """One row of a before/after chart (``None``: the layer does not exist on that side)."""

    label: str
    before: float | None
    after: float | None
    tip: str = ""


def human(v: float, unit: str = "") -> str:
    """``v`` with an SI prefix (1.23 G), or as it is below a thousand."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None else str(v)
    a = abs(v)
    for step, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= step:
            return f"{v / step:.3g} {prefix}{unit}".rstrip()
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g} {unit}".rstrip()
    return f"{int(v)} {unit}".rstrip()


def _clip(text: str, n: int = 38) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def common_prefix(labels: Sequence[str]) -> str:
    """The leading scopes (up to a ``/``) every label shares, e.g. ``/inner/mobilenet_v2/``;
    charts drop it from their row labels and name it once."""
    if len(labels) < 2:
        return ""
    first, last = min(labels), max(labels)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    cut = first[:n].rfind("/")
    return first[: cut + 1] if cut > 0 else ""


def _prefix_note(prefix: str, y: int) -> list[str]:
    if not prefix:
        return []
    return [f'<text class="note" x="{WIDTH - 4}" y="{y}" text-anchor="end">names under {escape(_clip(prefix, 60))}</text>']


def _svg(height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _legend(y: int, items: Sequence[tuple[str, str]]) -> list[str]:
    out, x = [], _LABEL
    for cls, text in items:
        out.append(f'<rect class="{cls}" x="{x}" y="{y - 9}" width="10" height="10"/>')
        out.append(f'<text class="legend" x="{x + 14}" y="{y}">{escape(text)}</text>')
        x += 24 + 7 * len(text)
    return out


def paired_bars(rows: Sequence[Pair], *, fmt: Callable[[float], str] = human, label: str = "before/after") -> str:
    """Two bars per row (before above after) on one linear scale; a missing side is marked
    ``removed``/``new``."""
    top = 22
    step = 2 * _BAR + 8
    height = top + len(rows) * step + 6
    scale = max([abs(v) for r in rows for v in (r.before, r.after) if v is not None] + [1e-30])
    span = WIDTH - _LABEL - _VALUE
    prefix = common_prefix([r.label for r in rows])
    body = _legend(13, (("bar-before", "before"), ("bar-after", "after"))) + _prefix_note(prefix, 13)
    y = top
    for r in rows:
        tip = escape(r.tip or r.label)
        body.append(f"<g><title>{tip}: before {_exact(r.before)}, after {_exact(r.after)}</title>")
        text = escape(_clip(r.label[len(prefix) :]))
        body.append(f'<text class="row-label" x="{_LABEL - 8}" y="{y + _BAR + 4}" text-anchor="end">{text}</text>')
        for i, (v, cls) in enumerate(((r.before, "bar-before"), (r.after, "bar-after"))):
            yy = y + i * _BAR
            if v is None:
                body.append(f'<text class="note" x="{_LABEL + 2}" y="{yy + 9}">{"new" if i == 0 else "removed"}</text>')
                continue
            w = max(abs(v) / scale * span, 0.5 if v else 0)
            body.append(f'<rect class="{cls}" x="{_LABEL}" y="{yy}" width="{w:.1f}" height="{_BAR - 1}"/>')
            body.append(f'<text class="value" x="{_LABEL + w + 4:.1f}" y="{yy + 9}">{escape(fmt(v))}</text>')
        body.append("</g>")
        y += step
    return _svg(height, body, label)


def bars(
    rows: Sequence[tuple[str, float, str]],
    *,
    fmt: Callable[[float], str] = human,
    lo: float | None = None,
    hi: float | None = None,
    marks: Sequence[float | None] | None = None,
    mark_label: str = "",
    bar_class: str = "bar-after",
    label: str = "chart",
) -> str:
    """One bar per ``(label, value, tooltip)`` row on a linear scale from ``lo`` to ``hi``
    (default 0 to the largest value); ``marks`` draws a tick per row (e.g. the target)."""
    prefix = common_prefix([name for name, _, _ in rows])
    top = 22 if marks or prefix else 6
    height = top + len(rows) * _ROW + 6
    finite = [v for _, v, _ in rows if math.isfinite(v)]
    lo = 0.0 if lo is None else lo
    hi = max(finite + [lo + 1e-30]) if hi is None else hi
    span = WIDTH - _LABEL - _VALUE
    body = _legend(13, ((bar_class, "measured"), ("mark", mark_label))) if marks else []
    body += _prefix_note(prefix, 13)

    def x_of(v: float) -> float:
        return _LABEL + (min(max(v, lo), hi) - lo) / (hi - lo) * span if hi > lo else _LABEL

    y = top
    for i, (name, v, tip) in enumerate(rows):
        body.append(f"<g><title>{escape(tip or name)}</title>")
        text = escape(_clip(name[len(prefix) :]))
        body.append(f'<text class="row-label" x="{_LABEL - 8}" y="{y + 13}" text-anchor="end">{text}</text>')
        if math.isfinite(v):
            w = x_of(v) - _LABEL
            body.append(f'<rect class="{bar_class}" x="{_LABEL}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="13"/>')
            body.append(f'<text class="value" x="{_LABEL + w + 4:.1f}" y="{y + 14}">{escape(fmt(v))}</text>')
        else:
            body.append(f'<text class="note" x="{_LABEL + 2}" y="{y + 14}">{escape(str(v))}</text>')
        m = marks[i] if marks else None
        if m is not None and math.isfinite(m):
            body.append(f'<rect class="mark" x="{x_of(m) - 1:.1f}" y="{y + 1}" width="2.5" height="17"/>')
        body.append("</g>")
        y += _ROW
    return _svg(height, body, label)


@dataclass(frozen=True)
class Span:
    """One pass run on the timeline (seconds from the pipeline's start)."""

    name: str
    start: float
    end: float
    modified: bool


def timeline(spans: Sequence[Span], *, label: str = "pass timeline") -> str:
    """A row per pass (in the order they first ran) with a box per run at its start and end;
    runs that changed the model are filled, the others hollow."""
    names = list(dict.fromkeys(s.name for s in spans))
    total = max([s.end for s in spans] + [1e-9])
    top, axis = 26, 22
    height = top + len(names) * _ROW + axis
    span = WIDTH - _LABEL - 20
    row = {n: i for i, n in enumerate(names)}
    body = _legend(13, (("run-changed", "changed the model"), ("run-idle", "no change")))
    for n, i in row.items():
        y = top + i * _ROW
        if i % 2 == 0:
            body.append(f'<rect class="stripe" x="0" y="{y}" width="{WIDTH}" height="{_ROW}"/>')
        body.append(f'<text class="row-label" x="{_LABEL - 8}" y="{y + 14}" text-anchor="end">{escape(_clip(n))}</text>')
    for s in spans:
        y = top + row[s.name] * _ROW
        x = _LABEL + s.start / total * span
        w = max((s.end - s.start) / total * span, 1.0)
        cls = "run-changed" if s.modified else "run-idle"
        body.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="12">'
            f"<title>{escape(s.name)}: {_ms(s.start)} to {_ms(s.end)} ({_ms(s.end - s.start)})"
            f"{', changed the model' if s.modified else ''}</title></rect>"
        )
    ya = top + len(names) * _ROW + 4
    body.append(f'<line class="axis" x1="{_LABEL}" y1="{ya}" x2="{_LABEL + span}" y2="{ya}"/>')
    for k in range(5):
        t = total * k / 4
        x = _LABEL + span * k / 4
        body.append(f'<line class="axis" x1="{x:.1f}" y1="{ya}" x2="{x:.1f}" y2="{ya + 4}"/>')
        body.append(f'<text class="value" x="{x:.1f}" y="{ya + 15}" text-anchor="middle">{_ms(t)}</text>')
    return _svg(height, body, label)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _exact(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.6g}"
    return f"{int(v):,}"
