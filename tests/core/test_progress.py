"""Progress: the library reports events through a hook (loading, each pass, calibration) and
prints nothing; the CLI draws them with rich on a terminal only, never under CI or with -q."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxforge
from onnxforge.api import QuantizationOptions
from onnxforge.cli import main
from onnxforge.commands.progress_view import BIG_MODEL_BYTES, ProgressView, progress_wanted
from onnxforge.models.cnn import small_cnn
from onnxforge.passmanager import CompositePass, FixedPoint, Sequential
from onnxforge.pipelines import get_pipeline
from onnxforge.progress import ProgressEvent


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _flat_steps(p):  # type: ignore[no-untyped-def]
    if isinstance(p, Sequential):
        return [s for c in p.passes for s in _flat_steps(c)]
    return [p]


def test_compile_reports_loading_and_every_pass(tmp_path, capsys):
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn()[0], src)
    events: list[ProgressEvent] = []
    onnxforge.compile(src, progress=events.append)
    assert capsys.readouterr() == ("", "")
    load = [e for e in events if e.stage == "load"]
    assert load[0].done == 0 and load[-1].finished and load[-1].done == load[-1].total == 4
    assert any("cnn.onnx: reading" in e.label for e in load)
    passes = [e for e in events if e.stage == "passes"]
    steps = _flat_steps(get_pipeline("optimize"))
    assert any(isinstance(s, FixedPoint) for s in steps) and not any(isinstance(s, Sequential) for s in steps)
    assert {e.total for e in passes} == {len(steps)}
    done = [e.done for e in passes]
    assert done == sorted(done) and done[0] == 0 and done[-1] == len(steps) and passes[-1].finished
    leaves = {leaf.name for s in steps for leaf in (s.leaves() if isinstance(s, CompositePass) else [s])}
    assert {e.label.removeprefix("pass ") for e in passes if e.label.startswith("pass ")} == leaves
    assert passes[-1].label == "ran pipeline optimize"


def test_disabled_passes_are_not_counted(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn()[0], src)
    events: list[ProgressEvent] = []
    onnxforge.compile(src, "lossless", disable=["toposort", "cleanup-to-fixed-point"], progress=events.append)
    last = [e for e in events if e.stage == "passes"][-1]
    assert last.finished and last.done == last.total == 3  # normalize-constants, shape-inference twice


def test_int8_calibration_reports_its_batches(tmp_path):
    events: list[ProgressEvent] = []
    q = QuantizationOptions(calibration="synthetic", min_cosine=None, speed_guard=False)
    onnxforge.compile(small_cnn()[0], "int8", quantization=q, progress=events.append)
    calib = [e for e in events if e.stage == "calibration"]
    assert calib and calib[0].label == "calibrating" and calib[0].unit == "batches"
    counted = [e for e in calib if e.label == "calibrating" and e.total]
    assert counted and counted[-1].done == counted[-1].total > 0
    assert calib[-1].finished


def test_the_budget_loop_and_sensitivity_report_inside_a_lossy_pass(tmp_path):
    """Work deep in a pass reports to compile's hook without it being passed down."""
    model, feeds = small_cnn()
    samples = tmp_path / "samples.npz"
    rng = np.random.default_rng(0)
    np.savez(samples, **{k: rng.standard_normal((20, *v.shape[1:])).astype(v.dtype) for k, v in feeds.items()})
    share = {"bits": 2, "min_elements": 16, "calibration": str(samples), "min_cosine": 0.9999, "allow_budget_miss": True}
    events: list[ProgressEvent] = []
    onnxforge.compile(model, "compress", options={"weight-sharing": share}, progress=events.append)
    ranked = [e for e in events if e.stage == "sensitivity"]
    assert ranked[0].done == 0 and ranked[-1].finished and ranked[-1].done == ranked[-1].total > 0
    steps = [e for e in events if e.stage == "budget"]
    assert steps and steps[-1].finished and steps[-1].done >= 1 and "backed off" in steps[-1].label
    assert all("backing off" in e.label for e in steps[:-1])


@pytest.mark.parametrize(
    ("quiet", "stream", "env", "want"),
    [
        (False, Tty(), {}, True),
        (True, Tty(), {}, False),
        (False, io.StringIO(), {}, False),
        (False, Tty(), {"CI": "true"}, False),
        (False, Tty(), {"ONNXFORGE_PROGRESS": "off"}, False),
    ],
)
def test_when_bars_are_wanted(quiet, stream, env, want):
    assert progress_wanted(quiet, stream, env) is want


def _events() -> list[ProgressEvent]:
    return [
        ProgressEvent("load", "loading m.onnx", 0, 4, "steps"),
        ProgressEvent("load", "loaded m.onnx", 4, 4, "steps", finished=True),
        ProgressEvent("passes", "pass constant-folding", 1, 3, "passes"),
        ProgressEvent("passes", "pass cse", 3, 3, "passes", finished=True),
        ProgressEvent("calibration", "calibrating", 7, 10, "batches"),
        ProgressEvent("calibration", "calibrating", 10, 10, "batches", finished=True),
    ]


def test_the_view_draws_big_models_and_calibration_only():
    big, small = Tty(), Tty()
    for stream, size in ((big, BIG_MODEL_BYTES), (small, BIG_MODEL_BYTES - 1)):
        with ProgressView(enabled=True, model_bytes=size, stream=stream, environ={}) as view:
            for e in _events():
                view(e)
    assert "\x1b[" in big.getvalue() and "pass cse" in big.getvalue() and "loaded m.onnx" in big.getvalue()
    assert "calibrating" in small.getvalue() and "pass" not in small.getvalue() and "loaded" not in small.getvalue()


def test_a_disabled_view_writes_nothing():
    out = Tty()
    with ProgressView(enabled=False, model_bytes=BIG_MODEL_BYTES, stream=out, environ={"ONNXFORGE_PROGRESS": "all"}) as view:
        for e in _events():
            view(e)
    assert out.getvalue() == ""


def test_no_escape_codes_off_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_PROGRESS", "all")
    monkeypatch.delenv("CI", raising=False)
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn()[0], src)
    assert main(["compile", str(src), "-o", str(tmp_path / "o.onnx")]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in err and "\x1b" not in out and "wrote" in out


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the onnxforge command with stdout and stderr on a pseudo-terminal; its output."""
    exe = Path(sys.executable).with_name("onnxforge")
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(exe), *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bars_appear_on_a_terminal_and_not_under_ci_or_quiet(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn()[0], src)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(ONNXFORGE_PROGRESS="all", COLUMNS="120", TERM="xterm")
    shown = _on_a_terminal(["compile", str(src), "-o", "o.onnx"], env, tmp_path)
    assert "ran pipeline optimize" in shown and "8/8 passes" in shown and "loaded cnn.onnx" in shown
    assert "\x1b[" in shown and "wrote o.onnx" in shown
    quiet = _on_a_terminal(["compile", str(src), "-o", "o.onnx", "-q"], env, tmp_path)
    assert quiet.strip() == ""
    under_ci = _on_a_terminal(["compile", str(src), "-o", "o.onnx"], {**env, "CI": "1"}, tmp_path)
    assert "passes" not in under_ci and "\x1b[" not in under_ci and "wrote o.onnx" in under_ci


def test_labels_are_text_not_markup():
    out = Tty()
    with ProgressView(enabled=True, stream=out, environ={}) as view:
        view(ProgressEvent("calibration", "backing off /attn[bold]x[/] [/oops]\x1b[2J\nnext", 1, 2, "steps"))
    text = out.getvalue()
    assert "/attn[bold]x[/] [/oops]" in text and "\x1b[2J" not in text
