"""Streaming statistics of a tensor's values: running min/max and an adaptive histogram.

Both accumulators see one batch at a time and keep a fixed amount of state, whatever the number
of batches: :class:`RunningMinMax` a few scalars, :class:`StreamingHistogram` two arrays of
``num_bins`` int64 counts.

The histogram covers ``[-bound, bound]`` and is stored as two halves over ``|x|``: ``pos[i]``
counts values ``x >= 0`` with ``|x|`` in bin ``i``, ``neg[i]`` values ``x < 0`` likewise, each bin
``bound / num_bins`` wide. So the ``|x|`` histogram is ``pos + neg`` and the signed one is
``neg[::-1]`` followed by ``pos``; zero is always a bin edge. Exact zeros are counted apart as
well (``zeros``), because 0 is exactly representable in every quantization grid.

The first batch sets ``bound`` to its largest ``|x|`` (plus 1 ppm, so that the maximum lies
strictly inside the last bin). When a later batch goes beyond it, the bound grows by the smallest integer factor ``m`` that covers the new values and every ``m``
adjacent old bins merge into one new bin. The merge is exact (no counts are split or
interpolated), at a cost in resolution: the final histogram resolves ``max|x|`` with between
``num_bins / 2`` and ``num_bins`` occupied bins (usually near the top end, since the range stops
growing after the first few batches).

Values that are NaN or infinite are counted in ``nonfinite`` and otherwise ignored. Integer
and float16 tensors are converted to float32 batch by batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The bound sits this fraction above the largest |x| seen, so that the maximum falls strictly
#: inside the last bin and later merges stay exact.
HEADROOM = 1e-6


@dataclass(frozen=True)
class Histogram:
    """A finished histogram (see the module notes for the layout)."""

    pos: np.ndarray
    neg: np.ndarray
    bound: float
    zeros: int

    @property
    def num_bins(self) -> int:
        return int(self.pos.size)

    @property
    def width(self) -> float:
        return self.bound / self.num_bins if self.num_bins else 0.0

    @property
    def total(self) -> int:
        return int(self.pos.sum() + self.neg.sum())

    def magnitude(self) -> np.ndarray:
        """Counts of ``|x|`` over ``[0, bound]`` (``num_bins`` bins)."""
        return self.pos + self.neg

    def signed(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts of ``x`` over ``[-bound, bound]`` (``2 * num_bins`` bins) and their edges."""
        counts = np.concatenate([self.neg[::-1], self.pos])
        edges = np.linspace(-self.bound, self.bound, 2 * self.num_bins + 1)
        return counts, edges


class RunningMinMax:
    """Smallest and largest finite value seen, plus value counts."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    def add(self, x: np.ndarray) -> np.ndarray:
        """Account for one batch; returns its finite values as float32 (or float64)."""
        x, _ = self._update(x)
        return x

    def _update(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Update min/max/counts; returns the finite values and their largest magnitude."""
        x = _as_float(x)
        if x.size == 0:
            return x, 0.0
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
            if x.size == 0:
                return x, 0.0
            lo, hi = float(x.min()), float(x.max())
        self.count += int(x.size)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        return x, max(-lo, hi)

    @property
    def seen(self) -> bool:
        return self.count > 0

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.seen else 0.0


class StreamingHistogram(RunningMinMax):
    """Min/max plus an adaptive histogram of the values (see the module notes)."""

    def __init__(self, num_bins: int = 2048) -> None:
        super().__init__()
        if num_bins < 1:
            raise ValueError(f"num_bins must be positive, got {num_bins}")
        self.num_bins = num_bins
        self.bound = 0.0
        self.pos = np.zeros(num_bins, dtype=np.int64)
        self.neg = np.zeros(num_bins, dtype=np.int64)
        self.zeros = 0

    def add(self, x: np.ndarray) -> np.ndarray:
        x, amax = self._update(x)
        if x.size == 0:
            return x
        zeros = int(x.size - np.count_nonzero(x))
        self.zeros += zeros
        if amax == 0.0:  # all zeros: bin 0 whatever the bound
            self.pos[0] += zeros
            return x
        if self.bound == 0.0:
            self.bound = amax * (1.0 + HEADROOM)
        elif amax >= self.bound:
            self._grow(amax * (1.0 + HEADROOM))
        self._count(x)
        return x

    def _grow(self, amax: float) -> None:
        m = math.ceil(amax / self.bound)
        while m * self.bound < amax:  # guard against rounding in the division
            m += 1
        self.pos = _merge(self.pos, m)
        self.neg = _merge(self.neg, m)
        self.bound *= m

    def _count(self, x: np.ndarray) -> None:
        n = self.num_bins
        # Shifted bin index floor(x * n / bound) + n, in [0, 2n): indices n.. are pos bins, index
        # n-1-i is neg bin i (|x| in (i*w, (i+1)*w]). Clipping first makes the value non-negative,
        # so truncation by astype is floor (and much faster than np.floor on signed values).
        idx = x * np.float32(n / self.bound)
        idx += np.float32(n)
        np.clip(idx, 0, 2 * n - 1, out=idx)
        counts = np.bincount(idx.astype(np.intp).ravel(), minlength=2 * n)
        self.pos += counts[n:]
        self.neg += counts[n - 1 :: -1]

    def histogram(self) -> Histogram:
        return Histogram(self.pos.copy(), self.neg.copy(), self.bound, self.zeros)


def _merge(counts: np.ndarray, m: int) -> np.ndarray:
    """Sum each run of ``m`` adjacent bins into one, keeping the number of bins."""
    merged = np.add.reduceat(counts, np.arange(0, counts.size, m))
    out = np.zeros_like(counts)
    out[: merged.size] = merged
    return out


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return x.astype(np.float32)
