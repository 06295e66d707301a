"""Latency measurement shared by the benchmarks, on the library's bench
(:mod:`onnxforge.runtime.bench`): sessions made the way ``onnxforge bench`` makes them (the
target's providers, a chosen optimization level and thread count) and medians of repeated runs,
interleaved across the models compared so that machine noise hits them alike."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxforge.runtime.bench import interleaved_times
from onnxforge.runtime.session import deployment_session
from onnxforge.runtime.target import TARGETS

LEVELS = ("disable", "basic", "extended", "all")


def session(model: str | bytes, *, level: str = "all", threads: int = 1, target: str = "cpu") -> Any:
    """A session for a path or serialized model on ``target`` (default CPU) at ``level``."""
    return deployment_session(model, TARGETS[target].with_session(optimization=level, threads=threads))


def interleaved_medians(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 15,
    warmup: int = 3,
    budget_s: float = 20.0,
) -> list[float]:
    """Median seconds per run of each session (:func:`onnxforge.runtime.bench.interleaved_times`:
    the sessions run in turn, round after round, the starting session rotating; fewer rounds when
    the budget would be exceeded, at least 5; more for fast models)."""
    times = interleaved_times(sessions, feeds, rounds=rounds, warmup=warmup, budget_s=budget_s)
    return [statistics.median(t) for t in times]


def write_markdown(out: str, lines: Sequence[str]) -> int:
    """Write a benchmark's markdown report and say where (the scripts' exit code, 0)."""
    from pathlib import Path

    Path(out).write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0
