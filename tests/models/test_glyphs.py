"""The stroke font draws every character it lists, inside the page, dark on light."""

from __future__ import annotations

import numpy as np

from onnxforge.models.glyphs import ALPHABET, GLYPHS, random_text, render_text


def test_every_glyph_draws_ink_inside_its_box():
    for ch in GLYPHS:
        page = render_text(ch, 40, 40, glyph_height=30, x=5)
        dark = page < 0.5
        assert dark.any(), ch
        ys, xs = np.nonzero(dark)
        # 30 px high, 18 wide starting at x=5, plus the stroke's half width and anti-aliasing
        assert ys.min() >= 3 and ys.max() <= 37 and xs.min() >= 3 and xs.max() <= 26, ch


def test_distinct_characters_render_differently():
    pages = {ch: render_text(ch, 32, 24, glyph_height=24, x=2) < 0.5 for ch in GLYPHS}
    names = sorted(pages)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (pages[a] != pages[b]).sum() > 10, (a, b)


def test_render_is_seeded_and_bounded():
    rng = np.random.default_rng(0)
    text = random_text(rng, 8)
    assert len(text) == 8 and set(text) <= set(ALPHABET) and text[0] != " " and text[-1] != " "
    assert random_text(np.random.default_rng(0), 8) == text
    page = render_text(text, 48, 160, glyph_height=20, paper=0.9, ink_level=0.1)
    assert page.shape == (48, 160) and page.min() >= 0.1 - 1e-9 and page.max() <= 0.9 + 1e-9
    canvas = np.full((48, 160), 0.9)
    render_text(text, 48, 160, glyph_height=20, paper=0.9, ink_level=0.1, canvas=canvas)
    assert np.allclose(canvas, page)
