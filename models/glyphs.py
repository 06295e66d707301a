"""A small stroke font and a rasterizer for synthetic text images, in numpy only.

OCR models fed with noise or random blocks are unsure of everything, and a model that is unsure
is far more sensitive to small perturbations than on the text it was trained for: measuring a
quantized text recognizer on such inputs says little. This module draws real characters
(digits and capital Latin letters, as polylines in a unit box) with anti-aliased strokes, so
the PP-OCR models in the corpus see text they read with confidence.

* :func:`render_text`: a string into a grayscale array (1 = paper, dark ink).
* :func:`random_text`: a seeded random string of the characters this font draws.
"""

from __future__ import annotations

import math

import numpy as np

Point = tuple[float, float]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 10) -> list[Point]:
    """Points on an ellipse arc, angles in degrees (0 = right, 90 = down)."""
    return [
        (cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)), cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)))
        for i in range(n + 1)
    ]


#: Character → strokes (polylines in a unit box: x right, y down).
GLYPHS: dict[str, list[list[Point]]] = {
    "0": [_arc(0.5, 0.5, 0.4, 0.5, 0, 360, 16)],
    "1": [[(0.25, 0.2), (0.55, 0.0), (0.55, 1.0)], [(0.25, 1.0), (0.85, 1.0)]],
    "2": [_arc(0.5, 0.28, 0.38, 0.28, 180, 360, 8) + [(0.85, 0.4), (0.1, 1.0), (0.9, 1.0)]],
    "3": [_arc(0.5, 0.25, 0.36, 0.25, 200, 450, 8), _arc(0.5, 0.72, 0.4, 0.28, 270, 520, 9)],
    "4": [[(0.7, 1.0), (0.7, 0.0), (0.05, 0.7), (0.95, 0.7)]],
    "5": [[(0.85, 0.0), (0.2, 0.0), (0.15, 0.45)] + _arc(0.5, 0.68, 0.38, 0.32, 240, 500, 9)],
    "6": [_arc(0.5, 0.5, 0.4, 0.5, 300, 180, 8) + _arc(0.5, 0.7, 0.4, 0.3, 180, 540, 12)],
    "7": [[(0.08, 0.0), (0.92, 0.0), (0.4, 1.0)]],
    "8": [_arc(0.5, 0.24, 0.32, 0.24, 0, 360, 12), _arc(0.5, 0.72, 0.4, 0.28, 0, 360, 12)],
    "9": [_arc(0.5, 0.3, 0.4, 0.3, 0, 360, 12) + _arc(0.5, 0.5, 0.4, 0.5, 0, 120, 8)],
    "A": [[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]],
    "B": [[(0.1, 0.5), (0.1, 0.0), (0.55, 0.0)] + _arc(0.55, 0.25, 0.3, 0.25, 270, 450, 6) + [(0.1, 0.5), (0.6, 0.5)]
          + _arc(0.6, 0.75, 0.32, 0.25, 270, 450, 6) + [(0.1, 1.0), (0.1, 0.5)]],
    "C": [_arc(0.55, 0.5, 0.45, 0.5, -40, -320, 12)],
    "D": [[(0.1, 0.0), (0.1, 1.0), (0.45, 1.0)] + _arc(0.45, 0.5, 0.45, 0.5, 90, -90, 10) + [(0.1, 0.0)]],
    "E": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.75, 0.5)]],
    "F": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0)], [(0.1, 0.5), (0.75, 0.5)]],
    "G": [_arc(0.55, 0.5, 0.45, 0.5, -40, -360, 14) + [(0.98, 0.55), (0.6, 0.55)]],
    "H": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]],
    "I": [[(0.5, 0.0), (0.5, 1.0)], [(0.25, 0.0), (0.75, 0.0)], [(0.25, 1.0), (0.75, 1.0)]],
    "J": [[(0.8, 0.0), (0.8, 0.7)] + _arc(0.5, 0.7, 0.3, 0.3, 0, 180, 8)],
    "K": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.1, 0.6)], [(0.35, 0.42), (0.9, 1.0)]],
    "L": [[(0.1, 0.0), (0.1, 1.0), (0.9, 1.0)]],
    "M": [[(0.05, 1.0), (0.1, 0.0), (0.5, 0.7), (0.9, 0.0), (0.95, 1.0)]],
    "N": [[(0.1, 1.0), (0.1, 0.0), (0.9, 1.0), (0.9, 0.0)]],
    "O": [_arc(0.5, 0.5, 0.45, 0.5, 0, 360, 16)],
    "P": [[(0.1, 1.0), (0.1, 0.0), (0.55, 0.0)] + _arc(0.55, 0.27, 0.35, 0.27, 270, 450, 8) + [(0.1, 0.54)]],
    "R": [[(0.1, 1.0), (0.1, 0.0), (0.55, 0.0)] + _arc(0.55, 0.27, 0.35, 0.27, 270, 450, 8) + [(0.1, 0.54)],
          [(0.5, 0.54), (0.9, 1.0)]],
    "S": [_arc(0.5, 0.26, 0.38, 0.26, -30, -270, 9) + _arc(0.5, 0.74, 0.4, 0.26, -90, 150, 9)],
    "T": [[(0.0, 0.0), (1.0, 0.0)], [(0.5, 0.0), (0.5, 1.0)]],
    "U": [[(0.1, 0.0), (0.1, 0.65)] + _arc(0.5, 0.65, 0.4, 0.35, 180, 0, 10) + [(0.9, 0.0)]],
    "V": [[(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)]],
    "W": [[(0.0, 0.0), (0.25, 1.0), (0.5, 0.35), (0.75, 1.0), (1.0, 0.0)]],
    "X": [[(0.05, 0.0), (0.95, 1.0)], [(0.95, 0.0), (0.05, 1.0)]],
    "Y": [[(0.0, 0.0), (0.5, 0.5), (1.0, 0.0)], [(0.5, 0.5), (0.5, 1.0)]],
    "Z": [[(0.1, 0.0), (0.9, 0.0), (0.1, 1.0), (0.9, 1.0)]],
}

#: The characters :func:`render_text` draws (space included).
ALPHABET = "".join(GLYPHS) + " "


def random_text(rng: np.random.Generator, length: int) -> str:
    """A random string of ``length`` drawable characters: groups of capitals and digits, no
    leading or trailing space."""
    chars = list(GLYPHS)
    out: list[str] = []
    for i in range(length):
        if 0 < i < length - 1 and out[-1] != " " and rng.random() < 0.15:
            out.append(" ")
        else:
            out.append(chars[int(rng.integers(len(chars)))])
    return "".join(out)


def _draw_segment(ink: np.ndarray, p: Point, q: Point, radius: float) -> None:
    """Darken ``ink`` (coverage in [0, 1]) along the segment p–q, anti-aliased over one pixel."""
    x0, x1 = int(max(0, math.floor(min(p[0], q[0]) - radius - 1))), int(min(ink.shape[1], math.ceil(max(p[0], q[0]) + radius + 2)))
    y0, y1 = int(max(0, math.floor(min(p[1], q[1]) - radius - 1))), int(min(ink.shape[0], math.ceil(max(p[1], q[1]) + radius + 2)))
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    dx, dy = q[0] - p[0], q[1] - p[1]
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - p[0]) * dx + (ys - p[1]) * dy) / length2, 0.0, 1.0)
    dist = np.hypot(xs - (p[0] + t * dx), ys - (p[1] + t * dy))
    cover = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    np.maximum(ink[y0:y1, x0:x1], cover, out=ink[y0:y1, x0:x1])


def render_text(
    text: str,
    height: int,
    width: int,
    *,
    glyph_height: float,
    x: float = 2.0,
    top: float | None = None,
    stroke: float | None = None,
    slant: float = 0.0,
    paper: float = 0.95,
    ink_level: float = 0.1,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    """``text`` drawn on a ``height`` × ``width`` page (values in [0, 1], 1 = white).

    ``glyph_height`` in pixels; glyphs are 0.6 of that wide with 0.25 spacing; ``x``/``top``
    place the line (``top`` default: centred); ``stroke``: line width (default a tenth of the
    glyph height); ``slant``: italic shear; drawing on ``canvas`` (modified in place) adds a line
    to a page. Characters outside :data:`ALPHABET` are drawn as spaces."""
    page = np.full((height, width), paper, np.float64) if canvas is None else canvas
    ink = np.zeros(page.shape, np.float64)
    gh = float(glyph_height)
    gw = 0.6 * gh
    radius = (stroke if stroke is not None else max(1.0, 0.1 * gh)) / 2
    y_top = (height - gh) / 2 if top is None else top
    cursor = x
    for ch in text:
        for line in GLYPHS.get(ch, []):
            pts = [(cursor + px * gw + slant * (1 - py) * gh, y_top + py * gh) for px, py in line]
            for p, q in zip(pts, pts[1:]):
                _draw_segment(ink, p, q, radius)
        cursor += gw * 1.25
    page -= ink * (page - ink_level)
    return page
