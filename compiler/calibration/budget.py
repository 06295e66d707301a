"""The int8 accuracy budget, and where its figures come from.

* :class:`Budget`: the bounds (every output's cosine and SQNR, the accuracy drop) and how a
  miss is worded ("short by ..."). NaN figures (non-finite outputs) fail every bound.
* :class:`BudgetError`: the compile fails when the guard cannot meet the budget; it carries the
  report and the best model it found (``allow_budget_miss`` returns that model instead).
* :func:`back_off`: the loop every lossy pass runs against its budget (int8 keeps layers in
  float; pruning prunes them less; weight sharing gives them more bits): while the candidate
  misses the budget, the layer the outputs are most sensitive to takes one step towards exact.
* :class:`Holdout`: splits the calibration stream, as it is read, into the samples calibrated
  on and the held-out ones the budget is measured on (every ``every``-th from the second, at
  most ``limit``), and notes which calibrated rows equal rows of other data (``--eval``,
  ``--eval-data``), so that no figure is measured on a sample that was calibrated on.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from onnxforge.errors import BudgetError, UsageError
from onnxforge.metrics.sqnr import below
from onnxforge.progress import Stage, current_hook

__all__ = ["Backoff", "Budget", "BudgetError", "Holdout", "back_off", "row_keys"]

Feed = Mapping[str, np.ndarray]
C = TypeVar("C")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Bounds the int8 model must hold against the float model: every output's cosine
    similarity (worst sample) and SQNR (dB, samples pooled), and the top-1 accuracy drop in
    points. None: not checked."""

    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise UsageError(f"--min-cosine must lie in [-1, 1], got {self.min_cosine}")
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise UsageError(f"--max-accuracy-drop must be at least 0 points, got {self.max_accuracy_drop}")
        if self.min_sqnr is not None and math.isnan(self.min_sqnr):
            raise UsageError("--min-sqnr must be a number of dB")

    @property
    def empty(self) -> bool:
        return self.min_cosine is None and self.min_sqnr is None and self.max_accuracy_drop is None

    def describe(self) -> str:
        parts = []
        if self.min_cosine is not None:
            parts.append(f"every output's cosine >= {self.min_cosine:g}")
        if self.min_sqnr is not None:
            parts.append(f"every output's SQNR >= {self.min_sqnr:g} dB")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop:g} points")
        return ", ".join(parts) or "none"

    def misses(
        self,
        cosine: Mapping[str, float],
        sqnr: Mapping[str, float],
        accuracy: tuple[float, float] | None = None,
    ) -> list[str]:
        """One phrase per figure that misses the budget, saying by how much."""
        out = []
        if self.min_cosine is not None:
            for name, c in cosine.items():
                if below(c, self.min_cosine):
                    out.append(
                        f"output {name!r} cosine {c:.4f} < {self.min_cosine:g} (short by {self.min_cosine - c:.4f})"
                        if not math.isnan(c)
                        else f"output {name!r} has no cosine: non-finite values (NaN/Inf) where float's are finite (short by all of it)"
                    )
        if self.min_sqnr is not None:
            for name, s in sqnr.items():
                if below(s, self.min_sqnr):
                    out.append(
                        f"output {name!r} SQNR {s:.1f} dB < {self.min_sqnr:g} dB (short by {self.min_sqnr - s:.1f} dB)"
                        if not math.isnan(s)
                        else f"output {name!r} has no SQNR: non-finite values (NaN/Inf) where float's are finite (short by all of it)"
                    )
        if self.max_accuracy_drop is not None and accuracy is not None:
            drop = (accuracy[0] - accuracy[1]) * 100
            if not drop <= self.max_accuracy_drop:
                out.append(
                    f"accuracy drop {drop:.2f} points > {self.max_accuracy_drop:g} "
                    f"(short by {drop - self.max_accuracy_drop:.2f} points)"
                )
        return out


@dataclass
class Backoff(Generic[C]):
    """What :func:`back_off` settled on: the candidate, its budget misses (empty: it holds),
    each layer's level (0: as compressed as asked; ``levels[layer]``: exact), and the layers
    that stepped back, in the order they did."""

    candidate: C
    misses: list[str]
    settings: dict[str, int]
    stepped: list[str] = field(default_factory=list)
    ranking: list[str] | None = None


def back_off(
    build: Callable[[Mapping[str, int]], C],
    misses: Callable[[C], list[str]],
    ranking: Callable[[], Sequence[str]],
    *,
    levels: Mapping[str, int] | int = 1,
    max_steps: int = 32,
    start: Mapping[str, int] | None = None,
) -> Backoff[C]:
    """Meet a budget by backing off one layer at a time.

    ``build(settings)`` makes the candidate where each named layer sits at its level (layers not
    named: level 0, the most compressed); ``misses(candidate)`` lists how it misses the budget
    (measured on held-out data); ``ranking()`` gives the layers from the one the outputs are
    most sensitive to (called once, only when a first candidate misses). While the candidate
    misses, the most sensitive layer that is not exact yet moves one level up (``levels``: per
    layer, or one number for all; a layer at its top level is exact) and the candidate is
    rebuilt, at most ``max_steps`` times."""
    settings = dict(start or {})
    candidate = build(settings)
    missed = misses(candidate)
    result = Backoff(candidate, missed, settings)
    stage = Stage(current_hook(), "budget", "meeting the accuracy budget", unit="steps")
    while missed and len(result.stepped) < max_steps:
        if result.ranking is None:
            result.ranking = list(ranking())
        top = levels if isinstance(levels, int) else None
        layer = next(
            (
                name
                for name in result.ranking
                if settings.get(name, 0) < (top if top is not None else levels.get(name, 0))  # type: ignore[union-attr]
            ),
            None,
        )
        if layer is None:
            break
        settings[layer] = settings.get(layer, 0) + 1
        result.stepped.append(layer)
        log.info("backing off %s (level %d): the layer the outputs are most sensitive to", layer, settings[layer])
        stage.step(len(result.stepped) - 1, f"meeting the accuracy budget: backing off {layer}")
        candidate = build(settings)
        missed = misses(candidate)
        result.candidate, result.misses = candidate, missed
        stage(len(result.stepped))
    if result.stepped:
        stage.label = f"accuracy budget: {len(result.stepped)} step(s) backed off" + (" (missed)" if missed else "")
        stage.close()
    result.settings = settings
    return result


def row_keys(feed: Feed) -> list[bytes]:
    """A digest per sample (row along axis 0, over every input) of one feed; the whole feed is
    one key when its inputs disagree on axis 0."""
    arrays = [np.ascontiguousarray(feed[k]) for k in sorted(feed)]
    rows = {a.shape[0] if a.ndim else -1 for a in arrays}
    if len(rows) != 1 or -1 in rows:
        return [_digest(arrays)]
    return [_digest([a[i] for a in arrays]) for i in range(rows.pop())]


def _digest(arrays: Sequence[np.ndarray]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


@dataclass
class Holdout:
    """Routes a calibration stream (see the module docstring). With ``every`` 0 nothing is held
    out. ``watch``: row keys (:func:`row_keys`) of other data; :attr:`calibrated_keys` collects
    the ones calibration read."""

    every: int = 5
    limit: int = 16
    watch: set[bytes] = field(default_factory=set)
    held: list[dict[str, np.ndarray]] = field(default_factory=list)
    calibrated: int = 0
    calibrated_keys: set[bytes] = field(default_factory=set)

    def calibrated_of(self, n: int | None) -> int | None:
        """How many of a stream of ``n`` feeds :meth:`route` passes on to calibration (None
        when ``n`` is: a stream of unknown length)."""
        if n is None:
            return None
        held = len(range(1, n, self.every)) if self.every else 0
        return n - min(held, self.limit)

    def route(self, stream: Iterable[Feed]) -> Iterator[dict[str, np.ndarray]]:
        """The calibration feeds of ``stream``, lazily; held-out feeds go to :attr:`held`."""
        for i, feed in enumerate(stream):
            if self.every and i % self.every == 1 and len(self.held) < self.limit:
                self.held.append(dict(feed))
                continue
            self.calibrated += 1
            if self.watch:
                self.calibrated_keys.update(k for k in row_keys(feed) if k in self.watch)
            yield dict(feed)
