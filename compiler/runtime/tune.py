"""``onnxforge tune``: the session options that run a model fastest on this machine.

The space (:func:`grid`): intra-op threads (1, 2, 4, ... up to the cores, and the cores),
execution mode (sequential; parallel with two inter-op threads) and graph optimization level
(disable, basic, extended, all). :func:`prune` drops what the cost model says cannot win
(:mod:`onnxforge.cost.execution` computes the figures it takes):

* the parallel mode, when less than 10% of the FLOPs lie off the graph's critical path;
* a thread count predicted (Amdahl over the nodes big enough to split) less than 10% faster
  than the next smaller one kept;
* optimization levels below ``extended``: onnxruntime's levels are cumulative (basic: constant
  folding and redundant-node removal; extended: fusions; all: layouts), so a lower level runs
  the same kernels or more of them. This one is a rule, not a cost-model figure; the full grid
  checks it.

Every configuration is timed against the same anchor session (the target's default options),
interleaved (:func:`onnxforge.runtime.bench.interleaved_times`), so only two sessions are alive
at once and machine noise cancels in the ratio. With ``full_grid`` the whole grid is timed in
the same run and :class:`TuneResult` says whether the pruned search found the grid's best.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxforge.runtime.bench import Feeds, Ratio, interleaved_rounds, ratio, round_medians
from onnxforge.runtime.machine import cpu_name
from onnxforge.runtime.session import ModelSource, deployment_session
from onnxforge.runtime.target import (
    EXECUTION_MODES,
    OPTIMIZATION_LEVELS,
    SESSION_FILE_SCHEMA,
    SessionConfig,
    Target,
)

log = logging.getLogger(__name__)

#: Tune's own defaults for the cost-model thresholds (see :mod:`onnxforge.cost.execution`).
PARALLEL_MIN_SHARE = 0.10
THREAD_MIN_GAIN = 1.10
KEEP_LEVELS = ("extended", "all")


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, and ``cores``."""
    out, t = [], 1
    while t < cores:
        out.append(t)
        t *= 2
    out.append(max(cores, 1))
    return sorted(set(out))


def grid(cores: int | None = None) -> list[SessionConfig]:
    """Every configuration tune considers, for ``cores`` cores (default: this machine's)."""
    cores = cores or os.cpu_count() or 1
    out = []
    for threads in thread_counts(cores):
        for mode in EXECUTION_MODES:
            for level in OPTIMIZATION_LEVELS:
                out.append(SessionConfig(threads=threads, optimization=level, execution_mode=mode, inter_threads=2 if mode == "parallel" else 0))
    return out


@dataclass(frozen=True)
class Hints:
    """The cost model's figures :func:`prune` reads: the share of FLOPs off the critical path,
    and the predicted speed-up of each thread count over one."""

    parallel_share: float
    speedup: Mapping[int, float]

    def to_json(self) -> dict[str, Any]:
        return {"parallel_share": self.parallel_share, "speedup": {str(k): v for k, v in sorted(self.speedup.items())}}


def prune(configs: Sequence[SessionConfig], hints: Hints) -> tuple[list[SessionConfig], list[tuple[SessionConfig, str]]]:
    """The configurations worth timing, and the others with the reason each was dropped."""
    kept_threads: list[int] = []
    for t in sorted({c.threads for c in configs}):
        if not kept_threads:
            kept_threads.append(t)
            continue
        prev = kept_threads[-1]
        if hints.speedup.get(t, 1.0) >= THREAD_MIN_GAIN * hints.speedup.get(prev, 1.0):
            kept_threads.append(t)
    kept: list[SessionConfig] = []
    dropped: list[tuple[SessionConfig, str]] = []
    for c in configs:
        if c.execution_mode == "parallel" and hints.parallel_share < PARALLEL_MIN_SHARE:
            dropped.append((c, f"parallel mode: only {hints.parallel_share * 100:.1f}% of the FLOPs lie off the critical path"))
        elif c.threads not in kept_threads:
            prev = max((t for t in kept_threads if t < c.threads), default=kept_threads[0])
            dropped.append(
                (c, f"{c.threads} threads: predicted {hints.speedup.get(c.threads, 1.0):.2f}x vs {hints.speedup.get(prev, 1.0):.2f}x at {prev}")
            )
        elif c.optimization not in KEEP_LEVELS:
            dropped.append((c, f"level {c.optimization}: onnxruntime's levels are cumulative (extended and all run fewer kernels)"))
        else:
            kept.append(c)
    return kept, dropped


@dataclass
class Timing:
    """One configuration against the anchor: ``vs_anchor.ratio_p50`` below 1 is faster."""

    config: SessionConfig
    p50_ms: float
    vs_anchor: Ratio
    create_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"session": self.config.to_json(), "p50_ms": self.p50_ms, "vs_default": self.vs_anchor.ratio_p50, "ci95": list(self.vs_anchor.ci95), "session_create_ms": self.create_ms}


@dataclass
class TuneResult:
    """What tune found. ``best``: the fastest of the pruned search; ``grid_best``: of the full
    grid (when timed); ``agrees``: the pruned best is the grid's best, or within the grid best's
    95% interval (the difference is noise)."""

    target: str
    anchor: SessionConfig
    hints: Hints
    searched: list[Timing]
    pruned: list[tuple[SessionConfig, str]]
    grid: list[Timing] = field(default_factory=list)
    search_seconds: float = 0.0
    grid_seconds: float = 0.0

    @property
    def best(self) -> Timing:
        return min(self.searched, key=lambda t: t.vs_anchor.ratio_p50)

    @property
    def grid_best(self) -> Timing | None:
        return min(self.grid, key=lambda t: t.vs_anchor.ratio_p50) if self.grid else None

    @property
    def agrees(self) -> bool | None:
        g = self.grid_best
        if g is None:
            return None
        mine = next((t for t in self.grid if t.config == self.best.config), self.best)
        return g.config == mine.config or mine.vs_anchor.ratio_p50 <= g.vs_anchor.ci95[1]

    def session_file(self, model: str) -> dict[str, Any]:
        """The ``MODEL.session.json`` tune writes (schema ``onnxforge.session/1``)."""
        b = self.best
        return {
            "schema": SESSION_FILE_SCHEMA,
            "model": model,
            "target": self.target,
            "session": b.config.to_json(),
            "measured": {"p50_ms": b.p50_ms, "vs_default": b.vs_anchor.ratio_p50, "ci95": list(b.vs_anchor.ci95), "default": self.anchor.to_json()},
            "onnxruntime": ort.__version__,
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count() or 0},
        }

    def to_json(self) -> dict[str, Any]:
        g = self.grid_best
        return {
            "target": self.target,
            "default": self.anchor.to_json(),
            "hints": self.hints.to_json(),
            "best": self.best.to_json(),
            "searched": [t.to_json() for t in self.searched],
            "pruned": [{"session": c.to_json(), "reason": r} for c, r in self.pruned],
            "search_seconds": self.search_seconds,
            "grid": [t.to_json() for t in self.grid],
            "grid_best": g.to_json() if g else None,
            "grid_seconds": self.grid_seconds,
            "agrees": self.agrees,
        }


def _time(
    model: ModelSource,
    target: Target,
    feeds: Feeds,
    configs: Sequence[SessionConfig],
    *,
    rounds: int,
    seconds_each: float,
    progress: Callable[[str], None] | None = None,
) -> list[Timing]:
    """Each configuration against an anchor session of ``target``'s own options."""
    anchor = deployment_session(model, target)
    out = []
    for i, c in enumerate(configs):
        t0 = time.perf_counter()
        sess = deployment_session(model, target.with_session(c))
        create_ms = (time.perf_counter() - t0) * 1e3
        base, mine = interleaved_rounds(
            [anchor, sess], feeds, rounds=rounds, warmup=2, budget_s=seconds_each, min_rounds=min(rounds, 5), max_rounds=200, round_target_s=seconds_each
        )
        r = ratio(round_medians(base), round_medians(mine))
        out.append(Timing(c, float(np.median([t for turn in mine for t in turn])) * 1e3, r, create_ms))
        if progress is not None:
            progress(f"[{i + 1}/{len(configs)}] {c.label()}: {r.ratio_p50:.3f}x the default")
        del sess
    return out


def tune(
    model: ModelSource,
    target: Target,
    feeds: Feeds,
    hints: Hints,
    *,
    cores: int | None = None,
    full_grid: bool = True,
    rounds: int = 10,
    seconds_each: float = 2.0,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search the session options of ``target`` for ``model`` (module docstring)."""
    configs = grid(cores)
    kept, dropped = prune(configs, hints)
    t0 = time.perf_counter()
    searched = _time(model, target, feeds, kept, rounds=rounds, seconds_each=seconds_each, progress=progress)
    search_s = time.perf_counter() - t0
    result = TuneResult(target.name, target.session, hints, searched, dropped, search_seconds=search_s)
    if full_grid:
        # The grid re-times every configuration, the pruned ones included, in the same run.
        t0 = time.perf_counter()
        result.grid = _time(model, target, feeds, configs, rounds=rounds, seconds_each=seconds_each, progress=progress)
        result.grid_seconds = time.perf_counter() - t0
    return result


def render(result: TuneResult) -> list[str]:
    lines = [
        f"tune --target {result.target}: cost model: {result.hints.parallel_share * 100:.1f}% of the FLOPs off the critical path; "
        f"predicted thread speed-ups {', '.join(f'{k}: {v:.2f}x' for k, v in sorted(result.hints.speedup.items()))}",
        f"searched {len(result.searched)} of {len(result.searched) + len(result.pruned)} configurations in {result.search_seconds:.1f} s "
        "(latency relative to the target's default options, interleaved):",
    ]
    for t in sorted(result.searched, key=lambda t: t.vs_anchor.ratio_p50):
        lines.append(f"  {t.config.label():<40} p50 {t.p50_ms:8.3f} ms  {t.vs_anchor.ratio_p50:.3f}x ({t.vs_anchor.ci95[0]:.3f}-{t.vs_anchor.ci95[1]:.3f})")
    reasons: dict[str, int] = {}
    for _, r in result.pruned:
        key = r.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    if result.pruned:
        lines.append("  pruned: " + "; ".join(f"{k} ({n})" for k, n in reasons.items()))
    lines.append(f"best: {result.best.config.label()} ({result.best.vs_anchor.ratio_p50:.3f}x the default)")
    g = result.grid_best
    if g is not None:
        verdict = "agrees" if result.agrees else "DISAGREES"
        lines.append(
            f"full grid ({len(result.grid)} configurations, {result.grid_seconds:.1f} s): best {g.config.label()} "
            f"({g.vs_anchor.ratio_p50:.3f}x, 95% {g.vs_anchor.ci95[0]:.3f}-{g.vs_anchor.ci95[1]:.3f}): the pruned search {verdict}"
        )
    return lines
