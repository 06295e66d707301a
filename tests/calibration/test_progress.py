"""The CLI progress bar: silent unless stderr is a terminal or it is asked to draw."""

from __future__ import annotations

import io

import numpy as np
from calib_models import ListReader, mlp

from onnxforge.calibration import ProgressBar, collect_ranges


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_on_a_non_terminal_by_default() -> None:
    out = io.StringIO()
    with ProgressBar(stream=out) as bar:
        for i in range(1, 4):
            bar(i, 3)
    assert out.getvalue() == ""


def test_redraws_on_a_terminal() -> None:
    out = Tty()
    with ProgressBar("calibrating", stream=out, min_interval=0.0) as bar:
        for i in range(1, 4):
            bar(i, 3)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "3/3" in text and "100%" in text and "[" + "#" * 30 + "]" in text


def test_plain_lines_when_asked_and_unknown_totals() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out, enabled=True, line_interval=0.0)
    bar(1, None)
    bar(2, None)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("calibrating 1 batches") and lines[1].startswith("calibrating 2 batches")
    assert "\r" not in out.getvalue()


def test_used_as_the_collect_callback() -> None:
    out = Tty()
    feeds = [{"x": np.ones((1, 4), np.float32)} for _ in range(5)]
    with ProgressBar(stream=out, min_interval=0.0) as bar:
        collect_ranges(mlp(), ["h"], ListReader(feeds), progress=bar)
    assert "calibrating 5 batches" in out.getvalue()
