"""Calibration reports its progress through a callback and never writes to the terminal: an
:class:`onnxforge.progress.Stage` turns the ``(done, total)`` calls into events."""

from __future__ import annotations

import numpy as np
from calib_models import ListReader, mlp

from onnxforge.calibration import collect_ranges
from onnxforge.progress import ProgressEvent, Stage


def test_collect_reports_every_batch_against_the_known_total(capsys) -> None:
    events: list[ProgressEvent] = []
    feeds = [{"x": np.ones((1, 4), np.float32)} for _ in range(5)]
    with Stage(events.append, "calibration", "calibrating", unit="batches") as stage:
        collect_ranges(mlp(), ["h"], feeds, progress=stage)
    counted = [(e.done, e.total) for e in events if not e.finished and e.done]
    assert counted == [(i, 5) for i in range(1, 6)]
    unknown: list[ProgressEvent] = []  # a reader without a length: counted, total unknown
    with Stage(unknown.append, "calibration", "calibrating", unit="batches") as stage:
        collect_ranges(mlp(), ["h"], ListReader(feeds), progress=stage)
    assert [(e.done, e.total) for e in unknown if not e.finished and e.done] == [(i, None) for i in range(1, 6)]
    assert events[0].done == 0 and events[-1].finished and events[-1].done == 5
    assert {e.stage for e in events} == {"calibration"} and {e.unit for e in events} == {"batches"}
    assert capsys.readouterr() == ("", "")  # nothing printed


def test_restart_ends_one_task_and_starts_the_next() -> None:
    events: list[ProgressEvent] = []
    stage = Stage(events.append, "calibration", "calibrating", unit="batches").start()
    stage(3, 3)
    stage.restart("measuring layer sensitivity", "layers")
    stage(1, 2)
    stage.close()
    stage.close()  # idempotent
    shown = [(e.label, e.done, e.total, e.finished) for e in events]
    assert shown == [
        ("calibrating", 0, None, False),
        ("calibrating", 3, 3, False),
        ("calibrating", 3, 3, True),
        ("measuring layer sensitivity", 0, None, False),
        ("measuring layer sensitivity", 1, 2, False),
        ("measuring layer sensitivity", 1, 2, True),
    ]


def test_a_stage_without_a_hook_does_nothing() -> None:
    stage = Stage(None, "calibration", "calibrating")
    with stage:
        stage(1, 2)
        stage.describe("x")
    assert stage.closed
