"""The HTML report rendered by headless Chromium (``make test-browser``, which installs Debian's
``chromium``): the screenshot is not blank and shows the charts' colours, and the DOM holds the
key numbers. Skips when ``chromium`` is not on PATH; ``make test`` deselects it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnxforge.cli import main
from onnxforge.models.cnn import small_cnn

sys.path.insert(0, str(Path(__file__).parent))
from png_decode import read_png  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The page's "before" and "after" bar colours (``--before``/``--after`` in its CSS).
BEFORE, AFTER = (0x7B, 0x8F, 0xC7), (0xF0, 0x8A, 0x4B)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test-browser installs it)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test-browser installs it)")
    d = tmp_path_factory.mktemp("browser")
    onnx.save(small_cnn()[0], d / "cnn.onnx")
    html = d / "report.html"
    assert main(["compile", str(d / "cnn.onnx"), "-o", str(d / "cnn.opt.onnx"), "--report", str(html), "-q"]) == 0
    return html, json.loads((d / "report.json").read_text())


def test_screenshot_is_not_blank(report, tmp_path):
    html, _ = report
    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1600", html.as_uri())
    assert shot.exists(), r.stderr[-2000:]
    width, height, pixels = read_png(shot)
    assert (width, height) == (1400, 1600)
    counts: dict[tuple[int, ...], int] = {}
    for p in pixels:
        counts[p] = counts.get(p, 0) + 1
    background = max(counts.values())
    assert background < 0.9 * len(pixels), "the page is (almost) one colour"
    assert len(counts) > 50, "too few colours for text and charts"
    # the before/after bars were drawn (exact fills inside the bars)
    assert counts.get(BEFORE, 0) > 200 and counts.get(AFTER, 0) > 200, (counts.get(BEFORE), counts.get(AFTER))


def test_dom_holds_the_key_numbers(report, tmp_path):
    html, data = report
    r = _chromium(tmp_path / "profile", "--dump-dom", html.as_uri())
    dom = r.stdout
    assert "onnxforge compile report" in dom, r.stderr[-2000:]
    for side in ("before", "after"):
        assert f"{data['cost'][side]['flops']:,}" in dom
        assert f"{data['cost'][side]['params']:,}" in dom
    for p in data["passes"]:
        assert p["name"] in dom
    assert dom.count("<svg") >= 5  # charts, the timeline and both graphs
