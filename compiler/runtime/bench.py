"""How onnxforge measures speed: latency percentiles, throughput, peak memory and session
creation time of a model on a target, and interleaved comparisons of several.

* :func:`bench` times one model: the session is made (timed, with the memory it takes), run
  ``warmup`` times, then run until both ``min_runs`` runs and ``seconds`` seconds are done (at
  most ``max_runs``).
* :func:`compare` times two models (or more) on the same target, interleaved: each round gives
  every session a turn, the session that starts a round rotating, so that machine noise (other
  processes, frequency changes) hits all of them alike. The ratio of medians comes with a
  bootstrap 95% interval over the rounds.
* :func:`interleaved_rounds` is the loop under :func:`compare` and ``tune``, also used by
  ``benchmarks/`` (:func:`interleaved_times`); each turn starts with an untimed run, so that
  every model is timed with warm caches, and models faster than 10 ms per run take turns of
  about 10 ms.

``onnxforge bench`` prints these; ``bench --json`` writes :meth:`BenchReport.to_json`, whose
schema (``onnxforge.bench/1``) is documented in ``docs/LOWERING.md``.

Peak memory on Linux: the process's resident high-water mark is reset (``/proc/self/clear_refs``)
before the session is made and read after the warm-up runs, so ``session_peak_bytes`` is what
making the session and running it took at its peak, beyond what the process held before.
Elsewhere the figure is the process's lifetime peak (``method`` says which).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxforge.runtime.machine import cpu_name
from onnxforge.runtime.session import ModelSource, deployment_session
from onnxforge.runtime.target import Target

#: ``bench --json``'s schema tag; bumped when a field changes meaning or goes away.
SCHEMA = "onnxforge.bench/1"

Feeds = Mapping[str, np.ndarray]


# --- memory --------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux 4.0+); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


@dataclass
class MemoryProbe:
    """Peak resident memory over a stretch of code: ``start()``, the work, ``stop()``."""

    method: str = ""
    before: int = 0
    peak: int = 0

    def start(self) -> None:
        rss = _status_kib("VmRSS")
        if rss is not None and _reset_peak():
            self.method, self.before = "vmhwm-reset", rss * 1024
        else:
            self.method, self.before = "ru_maxrss", 0

    def stop(self) -> None:
        hwm = _status_kib("VmHWM") if self.method == "vmhwm-reset" else None
        self.peak = hwm * 1024 if hwm is not None else _maxrss_bytes()

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.before)


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Per-run latency in milliseconds over ``runs`` timed runs (percentiles interpolate
    linearly; with fewer than 100 runs p99 lies near the maximum)."""

    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float

    @classmethod
    def from_seconds(cls, times: Sequence[float]) -> LatencyStats:
        if not times:
            raise ValueError("no timed runs")
        ms = np.asarray(times, dtype=np.float64) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        return cls(
            runs=len(ms),
            mean_ms=float(ms.mean()),
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            stdev_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        )

    def to_json(self) -> dict[str, float]:
        return {
            "mean": self.mean_ms,
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "stdev": self.stdev_ms,
        }


@dataclass
class ModelResult:
    """One model's figures (see :meth:`to_json` for the schema)."""

    path: str
    inputs: dict[str, dict[str, Any]]
    providers: list[str]
    session_create_ms: float
    memory_method: str
    session_peak_bytes: int
    process_peak_bytes: int
    warmup: int
    latency: LatencyStats
    batch: int
    times_s: list[float] = field(default_factory=list, repr=False)

    @property
    def runs_per_s(self) -> float:
        return 1e3 / self.latency.mean_ms if self.latency.mean_ms > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "inputs": self.inputs,
            "providers": self.providers,
            "session_create_ms": self.session_create_ms,
            "memory": {
                "method": self.memory_method,
                "session_peak_bytes": self.session_peak_bytes,
                "process_peak_bytes": self.process_peak_bytes,
            },
            "warmup_runs": self.warmup,
            "runs": self.latency.runs,
            "latency_ms": self.latency.to_json(),
            "throughput": {
                "batch": self.batch,
                "runs_per_s": self.runs_per_s,
                "samples_per_s": self.runs_per_s * self.batch,
            },
        }


@dataclass(frozen=True)
class Ratio:
    """``other`` against ``baseline``: ratio of median latencies (other / baseline: below 1,
    ``other`` is faster), the median of the per-round ratios and a bootstrap 95% interval of
    the ratio of medians over the rounds."""

    baseline: str
    other: str
    ratio_p50: float
    paired_median: float
    ci95: tuple[float, float]
    rounds: int

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio_p50 if self.ratio_p50 > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "other": self.other,
            "ratio_p50": self.ratio_p50,
            "speedup": self.speedup,
            "paired_median": self.paired_median,
            "ci95": list(self.ci95),
            "rounds": self.rounds,
        }


@dataclass
class BenchReport:
    """What ``onnxforge bench`` measured: one model, or several interleaved with their ratios."""

    target: dict[str, Any]
    settings: dict[str, Any]
    models: list[ModelResult]
    ratios: list[Ratio] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "onnxruntime": ort.__version__,
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count() or 0, "system": platform.system()},
            "target": self.target,
            "settings": self.settings,
            "models": [m.to_json() for m in self.models],
            "comparison": self.ratios[0].to_json() if self.ratios else None,
            "warnings": list(self.warnings),
        }


# --- timing --------------------------------------------------------------------------------


def _run(sess: Any, feeds: Feeds) -> Callable[[], Any]:
    names = [o.name for o in sess.get_outputs()]
    feed = dict(feeds)
    return lambda: sess.run(names, feed)


#: Every turn starts with one untimed run: the session before it has just evicted this one's
#: weights from the CPU caches, and alternating run by run timed models cold (1 vs 3 MatMul
#: layers of 512x512 measured 2.4x run by run against 6.9x warm; caches reach hundreds of MiB on
#: server CPUs, so this is not only a small-model effect). A session faster than ``TURN_S`` per
#: run then runs for about that long; a slower one once.
TURN_S = 0.01
#: At most this many timed runs per turn.
MAX_TURN_RUNS = 64


def interleaved_rounds(
    sessions: Sequence[Any],
    feeds: Feeds | Sequence[Feeds],
    *,
    rounds: int = 15,
    warmup: int = 3,
    budget_s: float = 20.0,
    min_rounds: int = 5,
    max_rounds: int = 400,
    round_target_s: float = 2.0,
    turn_s: float = TURN_S,
) -> list[list[list[float]]]:
    """Seconds of each run, as ``[session][round][run]``. Each round gives every session one
    turn, starting one session later than the previous round, so no session always runs first or
    right after the same neighbour (both shift latencies of large models by a few percent). A
    turn is one untimed run (to warm the caches the others used), then one timed run, or for a
    session faster than ``turn_s`` per run, timed runs for about ``turn_s``. At least ``rounds`` rounds,
    more for fast models (up to ``max_rounds`` or about ``round_target_s`` seconds), fewer when
    ``budget_s`` runs out (at least ``min_rounds``)."""
    per = [feeds] * len(sessions) if isinstance(feeds, Mapping) else list(feeds)
    if len(per) != len(sessions):
        raise ValueError(f"{len(sessions)} sessions but {len(per)} feeds")
    runs = [_run(s, f) for s, f in zip(sessions, per)]
    each = []
    for run in runs:
        last = 0.0
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            run()
            last = time.perf_counter() - t0
        each.append(last)
    per_turn = [1 if t >= turn_s else max(1, min(MAX_TURN_RUNS, int(turn_s / max(t, 1e-7)))) for t in each]
    rewarm = [True] * len(each)
    one_round = sum(t * (k + w) for t, k, w in zip(each, per_turn, rewarm))
    # Small models run many more rounds so that medians of a few microseconds are not at the
    # mercy of one noisy scheduling slice.
    rounds = max(rounds, min(max_rounds, int(round_target_s / max(one_round, 1e-6))))
    out: list[list[list[float]]] = [[] for _ in sessions]
    n = len(sessions)
    start = time.perf_counter()
    for r in range(rounds):
        for j in range(n):
            i = (r + j) % n
            if rewarm[i]:
                runs[i]()
            turn = []
            for _ in range(per_turn[i]):
                t0 = time.perf_counter()
                runs[i]()
                turn.append(time.perf_counter() - t0)
            out[i].append(turn)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return out


def interleaved_times(
    sessions: Sequence[Any],
    feeds: Feeds | Sequence[Feeds],
    **kwargs: Any,
) -> list[list[float]]:
    """Seconds of every timed run of each session, interleaved as :func:`interleaved_rounds`
    does (same keywords)."""
    return [[t for turn in rounds for t in turn] for rounds in interleaved_rounds(sessions, feeds, **kwargs)]


def round_medians(rounds: Sequence[Sequence[float]]) -> list[float]:
    """The median of each round's runs (the series :func:`ratio` pairs round by round)."""
    return [float(np.median(turn)) for turn in rounds]


def timed_runs(sess: Any, feeds: Feeds, *, min_runs: int = 10, max_runs: int = 10_000, seconds: float = 3.0) -> list[float]:
    """Seconds of consecutive runs: at least ``min_runs`` and until ``seconds`` have passed
    (at most ``max_runs``)."""
    run = _run(sess, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def ratio(baseline: Sequence[float], other: Sequence[float], *, names: tuple[str, str] = ("", ""), seed: int = 0) -> Ratio:
    """Ratio of median latencies of two interleaved series, one entry per round (a round's
    median: :func:`round_medians`)."""
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(1000, n))
    # Resampling whole rounds keeps each round's pair together (both saw the same noise).
    boot = np.median(b[idx], axis=1) / np.median(a[idx], axis=1)
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    return Ratio(names[0], names[1], float(np.median(b) / np.median(a)), float(np.median(b / a)), (lo, hi), n)


# --- sessions ------------------------------------------------------------------------------


def _describe_inputs(feeds: Feeds) -> dict[str, dict[str, Any]]:
    return {n: {"shape": [int(d) for d in np.shape(a)], "dtype": str(np.asarray(a).dtype)} for n, a in feeds.items()}


def _batch(feeds: Feeds) -> int:
    for a in feeds.values():
        shape = np.shape(a)
        return int(shape[0]) if shape else 1
    return 1


@dataclass
class _Opened:
    path: str
    sess: Any
    feeds: Feeds
    create_ms: float
    memory: MemoryProbe


def open_measured(model: ModelSource, target: Target, feeds: Feeds, *, warmup: int, strict: bool = True, name: str = "") -> _Opened:
    """Make ``model``'s session for ``target`` (timed) and warm it up, measuring peak memory."""
    probe = MemoryProbe()
    probe.start()
    t0 = time.perf_counter()
    sess = deployment_session(model, target, strict=strict)
    create_ms = (time.perf_counter() - t0) * 1e3
    run = _run(sess, feeds)
    for _ in range(max(warmup, 1)):
        run()
    probe.stop()
    label = name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<model>")
    return _Opened(label, sess, feeds, create_ms, probe)


def _result(o: _Opened, times: list[float], warmup: int) -> ModelResult:
    return ModelResult(
        path=o.path,
        inputs=_describe_inputs(o.feeds),
        providers=list(o.sess.get_providers()),
        session_create_ms=o.create_ms,
        memory_method=o.memory.method,
        session_peak_bytes=o.memory.growth,
        process_peak_bytes=o.memory.peak,
        warmup=max(warmup, 1),
        latency=LatencyStats.from_seconds(times),
        batch=_batch(o.feeds),
        times_s=list(times),
    )


def bench(
    model: ModelSource,
    target: Target,
    feeds: Feeds,
    *,
    warmup: int = 5,
    min_runs: int = 10,
    max_runs: int = 10_000,
    seconds: float = 3.0,
    strict: bool = True,
    name: str = "",
) -> BenchReport:
    """Time ``model`` on ``target`` (its session options) with ``feeds``."""
    opened = open_measured(model, target, feeds, warmup=warmup, strict=strict, name=name)
    times = timed_runs(opened.sess, feeds, min_runs=min_runs, max_runs=max_runs, seconds=seconds)
    settings = {"mode": "single", "warmup": max(warmup, 1), "min_runs": min_runs, "max_runs": max_runs, "seconds": seconds}
    return BenchReport(target.describe(), settings, [_result(opened, times, warmup)])


def compare(
    models: Sequence[ModelSource],
    target: Target,
    feeds: Sequence[Feeds],
    *,
    warmup: int = 5,
    min_runs: int = 10,
    max_runs: int = 400,
    seconds: float = 10.0,
    strict: bool = True,
    names: Sequence[str] = (),
) -> BenchReport:
    """Time ``models`` on ``target`` interleaved (see :func:`interleaved_times`); the ratios
    are each model against the first."""
    if len(models) < 2 or len(models) != len(feeds):
        raise ValueError("compare needs two models or more, each with its feeds")
    labels = list(names) or [""] * len(models)
    opened = [open_measured(m, target, f, warmup=warmup, strict=strict, name=n) for m, f, n in zip(models, feeds, labels)]
    by_round = interleaved_rounds(
        [o.sess for o in opened],
        [o.feeds for o in opened],
        rounds=min_runs,
        warmup=0,
        budget_s=seconds * 1.5,
        min_rounds=min(min_runs, 5),
        max_rounds=max_runs,
        round_target_s=seconds,
    )
    results = [_result(o, [t for turn in r for t in turn], warmup) for o, r in zip(opened, by_round)]
    base = round_medians(by_round[0])
    ratios = [ratio(base, round_medians(r), names=(opened[0].path, o.path)) for o, r in zip(opened[1:], by_round[1:])]
    settings = {"mode": "interleaved", "warmup": max(warmup, 1), "min_runs": min_runs, "max_runs": max_runs, "seconds": seconds}
    return BenchReport(target.describe(), settings, results, ratios)


def render(report: BenchReport) -> list[str]:
    """``bench``'s text output."""
    t = report.target
    lines = [f"target {t['name']}: {', '.join(t['providers'])}; session {t['session']}"]
    for m in report.models:
        lat = m.latency
        shapes = ", ".join(f"{n}={'x'.join(str(d) for d in i['shape']) or 'scalar'}" for n, i in m.inputs.items())
        lines += [
            f"{m.path}",
            f"  inputs       {shapes}",
            f"  providers    {', '.join(m.providers)}",
            f"  session      {m.session_create_ms:.1f} ms to create; peak memory +{m.session_peak_bytes / 2**20:.1f} MiB "
            f"(process {m.process_peak_bytes / 2**20:.1f} MiB)",
            f"  latency ms   p50 {lat.p50_ms:.4g}  p90 {lat.p90_ms:.4g}  p99 {lat.p99_ms:.4g}  mean {lat.mean_ms:.4g}  "
            f"min {lat.min_ms:.4g}  ({lat.runs} runs after {m.warmup} warm-up)",
            f"  throughput   {m.runs_per_s:.1f} runs/s ({m.runs_per_s * m.batch:.1f} samples/s at batch {m.batch})",
        ]
    for r in report.ratios:
        faster = "faster" if r.ratio_p50 < 1 else "slower"
        lines.append(
            f"{r.other} / {r.baseline}: {r.ratio_p50:.3f}x the latency (95% interval {r.ci95[0]:.3f}-{r.ci95[1]:.3f}, "
            f"{r.rounds} interleaved rounds): {abs(1 - r.ratio_p50) * 100:.1f}% {faster}"
        )
    lines += [f"warning: {w}" for w in report.warnings]
    return lines
