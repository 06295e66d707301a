"""Choosing a quantization range from collected statistics, and turning it into scale/zero point.

Methods (``x`` is the tensor's values over all calibration batches; histograms come from
:mod:`onnxforge.calibration.histogram`):

* ``minmax``: ``[min(x), max(x)]``, exactly.
* ``percentile``: symmetric (``symmetric=True``): the ``p``-th percentile ``T`` of ``|x|``, range
  ``[-T, T]``; asymmetric: the two-sided percentiles ``(100 - p) / 2`` and ``100 - (100 - p) / 2``
  of ``x``. Percentiles interpolate linearly inside the histogram bin that holds them.
* ``entropy``: TensorRT's KL-divergence calibration on the ``|x|`` histogram. For each candidate
  threshold ``i`` bins (``i`` from the number of quantized levels up to the last occupied bin),
  the reference distribution ``P`` is the first ``i`` bins with everything beyond folded into the
  last one; the candidate ``Q`` merges those ``i`` bins into ``2**(bits-1)`` levels (128 for int8;
  ``2**bits`` when the scheme is asymmetric and the tensor never goes below zero), spreading each
  level's count evenly over the bins where ``P`` is non-empty (an otherwise empty last level
  gets a tiny count, so clipping into an empty stretch is penalized, not infinite). The
  threshold with the smallest ``KL(P || Q)`` wins (ties: the largest). Exact zeros are left out,
  as 0 is exactly representable. All candidates are evaluated at once with cumulative sums (no
  Python loop over thresholds): a few milliseconds per tensor for 2048 bins.
* ``mse``: the range minimizing the expected squared quantization error of the histogram: values
  inside the range cost the rounding noise of a uniform grid, ``scale**2 / 12`` each (exact
  zeros cost nothing), values outside cost their squared distance to the range end (bin centre,
  plus ``width**2 / 12`` for the spread inside the bin). Symmetric: every bin edge of ``|x|`` is a
  candidate ``T`` with ``scale = T / (2**(bits-1) - 1)``. Asymmetric: candidate pairs
  ``(lo <= 0, hi >= 0)`` from the signed histogram's edges (at most 512 per side) with
  ``scale = (hi - lo) / (2**bits - 1)``.

``minmax`` ignores the scheme. The histogram methods return, for a symmetric scheme, ``[-T, T]``
with ``T <= max|x|``; for an asymmetric one, a range inside ``[min(x), max(x)]`` (a threshold
beyond the data is cut back to the data's extremes, so a ReLU output's range starts at 0).
:func:`scale_zero_point` widens a range to include 0 and guarantees a positive scale, so
constant and all-zero tensors quantize too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxforge.calibration.histogram import Histogram, RunningMinMax, StreamingHistogram
from onnxforge.errors import UsageError

Method = Literal["minmax", "percentile", "entropy", "mse"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")
QType = Literal["uint8", "int8"]
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}
#: Counts given to an empty last bin of the entropy method's candidate distribution.
KL_EPS = 1e-4
#: The most asymmetric-MSE candidates per side (the search is quadratic in it).
MSE_CANDIDATES_PER_SIDE = 512


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor.

    ``min``/``max`` is the chosen range (clipped for histogram methods); ``observed_min``/
    ``observed_max`` the extremes of the data, ``count`` the finite values seen, ``nonfinite``
    the NaN/inf values skipped. ``clipped`` is the fraction of values outside the range
    (histogram methods, measured on bins; 0 for minmax). ``histogram`` is kept for reports.
    """

    min: float
    max: float
    method: str
    observed_min: float
    observed_max: float
    count: int
    nonfinite: int = 0
    clipped: float = 0.0
    histogram: Histogram | None = None

    def scale_zero_point(self, qtype: QType = "uint8", symmetric: bool = False) -> tuple[float, int]:
        """(scale, zero point) for this range; see :func:`scale_zero_point`."""
        return scale_zero_point(self.min, self.max, qtype, symmetric)


def scale_zero_point(rmin: float, rmax: float, qtype: QType = "uint8", symmetric: bool = False) -> tuple[float, int]:
    """Scale and zero point that map ``[rmin, rmax]`` (widened to include 0) onto ``qtype``.

    Asymmetric: ``scale = (rmax - rmin) / (qmax - qmin)``, zero point ``round(qmin - rmin / scale)``
    clamped into the type. Symmetric: ``scale = max(|rmin|, |rmax|) / 127`` with zero point 0
    (int8, codes -127..127 in use) or 128 (uint8). Real 0 always maps to the integer zero point,
    so it is exactly representable. The scale is rounded to float32 (as stored in the model)
    before the zero point is computed, and is never 0: an all-zero range gets scale 1.
    """
    if qtype not in _QRANGE:
        raise UsageError(f"unsupported quantized type {qtype!r} (choose uint8 or int8)")
    if not (math.isfinite(rmin) and math.isfinite(rmax)):
        raise ValueError(f"cannot quantize a non-finite range [{rmin}, {rmax}]")
    qmin, qmax = _QRANGE[qtype]
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if symmetric:
        absmax = max(-rmin, rmax)
        scale = _positive_f32(absmax / 127.0)
        return scale, (0 if qtype == "int8" else 128)
    scale = _positive_f32((rmax - rmin) / (qmax - qmin))
    zero_point = int(round(qmin - rmin / scale))
    return scale, min(max(zero_point, qmin), qmax)


def _positive_f32(scale: float) -> float:
    """``scale`` as a float32 value: 1 for 0, at least the smallest normal float32 otherwise."""
    if scale == 0.0:
        return 1.0
    tiny = float(np.finfo(np.float32).tiny)
    return max(float(np.float32(scale)), tiny)


# -- from statistics to a range ---------------------------------------------------------------


def compute_range(
    stats: RunningMinMax,
    method: str,
    *,
    percentile: float = 99.99,
    symmetric: bool = False,
    bits: int = 8,
) -> TensorRange:
    """The range of one tensor from its accumulated statistics.

    ``stats`` must be a :class:`StreamingHistogram` for every method but ``minmax``.
    """
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r} (choose {', '.join(METHODS)})")
    if method != "minmax" and not isinstance(stats, StreamingHistogram):
        raise TypeError(f"the {method} method needs a StreamingHistogram, not {type(stats).__name__}")
    if not stats.seen:
        return TensorRange(0.0, 0.0, method, 0.0, 0.0, 0, stats.nonfinite)
    if method == "minmax" or not isinstance(stats, StreamingHistogram):  # (the second for mypy)
        return TensorRange(stats.min, stats.max, method, stats.min, stats.max, stats.count, stats.nonfinite)
    hist = stats.histogram()
    if method == "percentile":
        lo, hi = percentile_range(hist, percentile, symmetric)
    elif method == "entropy":
        levels = 2**bits if not symmetric and stats.min >= 0 else 2 ** (bits - 1)
        t = entropy_threshold(hist, levels)
        lo, hi = -t, t
    else:
        lo, hi = mse_range(hist, bits, symmetric)
    if symmetric:
        t = min(max(-lo, hi), stats.absmax)
        lo, hi = -t, t
    else:
        lo, hi = max(lo, stats.min), min(hi, stats.max)
    if lo > hi:  # only possible for degenerate histograms; fall back to the data
        lo, hi = stats.min, stats.max
    return TensorRange(
        lo, hi, method, stats.min, stats.max, stats.count, stats.nonfinite, _clipped(hist, lo, hi), hist
    )


def _clipped(hist: Histogram, lo: float, hi: float) -> float:
    counts, edges = hist.signed()
    total = counts.sum()
    if total == 0:
        return 0.0
    centres = (edges[:-1] + edges[1:]) / 2
    return float(counts[(centres < lo) | (centres > hi)].sum() / total)


# -- percentile -------------------------------------------------------------------------------


def percentile_range(hist: Histogram, percentile: float, symmetric: bool) -> tuple[float, float]:
    """Symmetric: ``(-T, T)`` with ``T`` the percentile of ``|x|``; else two-sided percentiles."""
    if symmetric:
        edges = np.linspace(0.0, hist.bound, hist.num_bins + 1)
        t = _quantile(hist.magnitude(), edges, percentile / 100.0, 0, hist.zeros)
        return -t, t
    counts, edges = hist.signed()
    tail = (1.0 - percentile / 100.0) / 2.0
    n = hist.num_bins
    return (
        _quantile(counts, edges, tail, n, hist.zeros),
        _quantile(counts, edges, 1.0 - tail, n, hist.zeros),
    )


def _quantile(counts: np.ndarray, edges: np.ndarray, q: float, zero_bin: int, zeros: int) -> float:
    """The value below which a fraction ``q`` of the counts lies.

    Linear inside a bin, except that the ``zeros`` exact zeros are a point mass at the lower
    edge of ``zero_bin`` (the bin starting at 0), so that e.g. a ReLU output's low end is 0.
    """
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    total = cdf[-1]
    if total == 0:
        return 0.0
    target = q * total
    k = int(np.searchsorted(cdf, target, side="left"))
    if k == 0:
        # q == 0: the lower edge of the first occupied bin
        return float(edges[int(np.argmax(counts > 0))])
    k = min(k, counts.size)
    below, inside = cdf[k - 1], cdf[k] - cdf[k - 1]
    if k - 1 == zero_bin and zeros:
        if target - below <= zeros:
            return float(edges[k - 1])
        below, inside = below + zeros, inside - zeros
    frac = (target - below) / inside if inside > 0 else 1.0
    return float(edges[k - 1] + frac * (edges[k] - edges[k - 1]))


# -- entropy (KL divergence) ------------------------------------------------------------------


def entropy_threshold(hist: Histogram, levels: int = 128) -> float:
    """TensorRT-style threshold on ``|x|`` minimizing ``KL(P || Q)`` (see the module notes)."""
    counts = hist.magnitude().astype(np.float64)
    counts[0] -= hist.zeros  # zero is exact in every grid: leave it out of the divergence
    used = _occupied(counts)
    if used == 0:
        return 0.0
    if used <= levels:  # the data fits the grid's resolution without clipping
        return used * hist.width
    candidates, kl = kl_divergences(counts[:used], levels)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))  # the largest threshold among ties
    return float(candidates[best]) * hist.width


def kl_divergences(counts: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """``KL(P_i || Q_i)`` for every candidate ``i`` in ``[levels, len(counts)]``.

    ``P_i`` is ``counts[:i]`` with the mass of ``counts[i:]`` (the clipped values) added to its
    last bin. ``Q_i`` merges ``counts[:i]`` -- without the clipped mass -- into ``levels`` groups
    (bin ``b`` into group ``floor(b * levels / i)``) and spreads each group's total evenly over
    the bins where ``P_i`` is non-empty. Where that leaves ``Q_i``'s last bin empty under a
    non-empty ``P_i`` bin (clipping into an empty stretch), it gets ``KL_EPS`` counts, the
    smoothing constant of MXNet's and onnxruntime's calibrators, so the divergence is large but
    finite. Both distributions are normalized.
    """
    h = np.asarray(counts, dtype=np.float64)
    total = h.sum()
    cum = np.concatenate([[0.0], np.cumsum(h)])
    cum_nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    cum_hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    cand = np.arange(levels, h.size + 1)
    inside = cum[cand]
    outliers = total - inside
    last = h[cand - 1]
    # Group g of candidate i spans bins [ceil(g*i/levels), ceil((g+1)*i/levels)).
    starts = (np.arange(levels + 1)[None, :] * cand[:, None] + levels - 1) // levels
    group_sum = cum[starts[:, 1:]] - cum[starts[:, :-1]]
    group_nonzero = cum_nonzero[starts[:, 1:]] - cum_nonzero[starts[:, :-1]]
    group_nonzero[:, -1] += (last == 0) & (outliers > 0)  # P's last bin holds the clipped mass
    q_level = group_sum / np.maximum(group_nonzero, 1)  # Q in each non-empty bin of P
    q_last = q_level[:, -1]
    floored = (q_last == 0) & (outliers > 0)
    q_last = np.where(floored, KL_EPS, q_last)
    sum_plogq = np.sum(group_sum * _safe_log(q_level), axis=1) + outliers * _safe_log(q_last)
    sum_plogp = cum_hlogh[cand - 1] + _xlogx(last + outliers)
    sum_q = inside + np.where(floored, KL_EPS, 0.0)
    with np.errstate(divide="ignore"):
        kl = (sum_plogp - sum_plogq) / total + np.log(sum_q / total)
    kl[inside == 0] = np.inf
    return cand, kl


def _xlogx(x: np.ndarray) -> np.ndarray:
    return x * _safe_log(x)


def _safe_log(x: np.ndarray) -> np.ndarray:
    """log(x) where x > 0, else 0 (callers multiply by a zero weight there)."""
    return np.log(np.where(x > 0, x, 1.0))


def _occupied(counts: np.ndarray) -> int:
    """One past the last non-empty bin."""
    nz = np.flatnonzero(counts)
    return int(nz[-1]) + 1 if nz.size else 0


# -- MSE --------------------------------------------------------------------------------------


def mse_range(hist: Histogram, bits: int = 8, symmetric: bool = False) -> tuple[float, float]:
    """The range minimizing the expected squared quantization error (see the module notes)."""
    if symmetric:
        t = _mse_symmetric(hist, bits)
        return -t, t
    return _mse_asymmetric(hist, bits)


def mse_symmetric_errors(hist: Histogram, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds ``T`` (the bin edges of ``|x|``) and the expected error of each."""
    h = hist.magnitude().astype(np.float64)
    h[0] -= hist.zeros  # exact zeros cost nothing whatever the range
    used = _occupied(h)
    w = hist.width
    t = np.arange(1, used + 1) * w
    centres = (np.arange(used) + 0.5) * w
    h = h[:used]
    # Threshold t[k-1] = k * w clips bins k.. used-1: suffix sums from k = 1.
    a = _suffix(h)[1:]
    b = _suffix(h * centres)[1:]
    c = _suffix(h * centres**2)[1:]
    clip = c - 2 * t * b + t**2 * a + a * w * w / 12
    inside = np.cumsum(h)
    scale = t / (2 ** (bits - 1) - 1)
    return t, inside * scale**2 / 12 + clip


def _mse_symmetric(hist: Histogram, bits: int) -> float:
    t, err = mse_symmetric_errors(hist, bits)
    if t.size == 0:
        return 0.0
    best = len(err) - 1 - int(np.argmin(err[::-1]))
    return float(t[best])


def _suffix(x: np.ndarray) -> np.ndarray:
    """``out[k] = sum(x[k:])`` for k in ``0..len(x)``."""
    return np.concatenate([np.cumsum(x[::-1])[::-1], [0.0]])


def _mse_asymmetric(hist: Histogram, bits: int) -> tuple[float, float]:
    counts, edges = hist.signed()
    n, w = hist.num_bins, hist.width
    h = counts.astype(np.float64)
    h[n] -= hist.zeros  # exact zeros (in the first bin above 0) cost nothing whatever the range
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return 0.0, 0.0
    centres = (edges[:-1] + edges[1:]) / 2
    lo_idx = _thin(np.arange(min(int(nz[0]), n), n + 1))  # edges <= 0 down to the data
    hi_idx = _thin(np.arange(n, max(int(nz[-1]) + 1, n) + 1))  # edges >= 0 up to the data
    cum = np.concatenate([[0.0], np.cumsum(h)])
    cum_x = np.concatenate([[0.0], np.cumsum(h * centres)])
    cum_xx = np.concatenate([[0.0], np.cumsum(h * centres**2)])
    lo, hi = edges[lo_idx], edges[hi_idx]
    # Clipping error below lo (bins < k) and above hi (bins >= k).
    a, b, c = cum[lo_idx], cum_x[lo_idx], cum_xx[lo_idx]
    below = c - 2 * lo * b + lo**2 * a + a * w * w / 12
    a, b, c = cum[-1] - cum[hi_idx], cum_x[-1] - cum_x[hi_idx], cum_xx[-1] - cum_xx[hi_idx]
    above = c - 2 * hi * b + hi**2 * a + a * w * w / 12
    inside = cum[hi_idx][None, :] - cum[lo_idx][:, None]
    scale = (hi[None, :] - lo[:, None]) / (2**bits - 1)
    err = inside * scale**2 / 12 + below[:, None] + above[None, :]
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return float(lo[i]), float(hi[j])


def _thin(idx: np.ndarray, limit: int = MSE_CANDIDATES_PER_SIDE) -> np.ndarray:
    """At most ``limit`` evenly spaced entries of ``idx``, keeping both ends."""
    if idx.size <= limit:
        return idx
    return idx[np.unique(np.round(np.linspace(0, idx.size - 1, limit)).astype(np.intp))]
