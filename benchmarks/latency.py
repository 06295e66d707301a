"""Latency measurement shared by the benchmarks: onnxruntime sessions at a chosen optimization
level and thread count, and medians of repeated runs, interleaved across the models compared so
that machine noise hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LEVELS = ("disable", "basic", "extended", "all")


def session(model: str | bytes, *, level: str = "all", threads: int = 1) -> Any:
    """An onnxruntime CPU session for a path or serialized model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def interleaved_medians(
    sessions: Sequence[Any],
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    rounds: int = 15,
    warmup: int = 3,
    budget_s: float = 20.0,
) -> list[float]:
    """Median seconds per run of each session; the sessions run in turn, round after round, the
    starting session rotating (fewer rounds when the budget would be exceeded, at least 5; more
    for fast models)."""
    per = [feeds] * len(sessions) if isinstance(feeds, Mapping) else list(feeds)
    one_round = 0.0
    for s, f in zip(sessions, per):
        for _ in range(warmup):
            t0 = time.perf_counter()
            s.run(None, dict(f))
            last = time.perf_counter() - t0
        one_round += last
    # Small models run many more rounds (up to 400, about 2 s) so that medians of a few
    # microseconds are not at the mercy of one noisy scheduling slice.
    rounds = max(rounds, min(400, int(2.0 / max(one_round, 1e-6))))
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    n = len(sessions)
    for r in range(rounds):
        # Each round starts one session later, so that no session always runs first or right
        # after the same neighbour (both shift latencies of large models by a few percent).
        for k in range(n):
            i = (r + k) % n
            t0 = time.perf_counter()
            sessions[i].run(None, dict(per[i]))
            times[i].append(time.perf_counter() - t0)
        if r >= 4 and time.perf_counter() - start > budget_s:
            break
    return [statistics.median(t) for t in times]


def write_markdown(out: str, lines: Sequence[str]) -> int:
    """Write a benchmark's markdown report and say where (the scripts' exit code, 0)."""
    from pathlib import Path

    Path(out).write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0
