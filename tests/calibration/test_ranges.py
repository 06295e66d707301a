"""Histogram accumulation, the range methods on known histograms, and scale/zero point."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxforge.calibration.histogram import Histogram, RunningMinMax, StreamingHistogram
from onnxforge.calibration.ranges import (
    KL_EPS,
    compute_range,
    entropy_threshold,
    kl_divergences,
    scale_zero_point,
)
from onnxforge.errors import UsageError


def _direct_counts(data: np.ndarray, bound: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """pos/neg counts of ``data`` binned directly at the final bound (float64 reference)."""
    idx = np.clip(np.floor(data.astype(np.float64) * (n / bound)), -n, n - 1).astype(int)
    counts = np.bincount(idx + n, minlength=2 * n)
    return counts[n:], counts[n - 1 :: -1]


def test_rebinning_is_exact_when_the_range_grows() -> None:
    rng = np.random.default_rng(0)
    # The first batch spans exactly [-1, 1]; every other value sits at the centre of a bin of
    # width 1/256, so no value is near a bin edge at any bound the histogram grows to.
    def centres(scale: float, size: int = 5000) -> np.ndarray:
        return (np.floor(rng.standard_normal(size) * scale * 256) + 0.5) / 256

    first = np.concatenate([[1.0, -1.0], np.clip(centres(0.3), -0.99, 0.99)])
    batches = [first, centres(1.0), centres(3.0), centres(2.0), centres(7.0)]
    batches = [b.astype(np.float32) for b in batches]
    h = StreamingHistogram(256)
    bounds = []
    for b in batches:
        h.add(b)
        bounds.append(h.bound)
    assert bounds[0] == pytest.approx(1.0, rel=1e-5) and bounds[-1] > bounds[0]
    assert len(set(bounds)) > 2  # it did grow, more than once
    data = np.concatenate(batches)
    assert h.bound >= np.abs(data).max() and h.count == data.size
    assert h.zeros == int(np.sum(data == 0))
    pos, neg = _direct_counts(data, h.bound, 256)
    np.testing.assert_array_equal(h.pos, pos)
    np.testing.assert_array_equal(h.neg, neg)
    # Occupancy: the data spans at least half of the bins.
    hist = h.histogram()
    assert np.flatnonzero(hist.magnitude())[-1] + 1 >= 128
    counts, edges = hist.signed()
    assert counts.sum() == data.size and edges[0] == -h.bound and edges[256] == 0.0


def test_running_minmax_and_special_values() -> None:
    r = RunningMinMax()
    r.add(np.array([], np.float32))
    assert not r.seen and r.absmax == 0.0
    r.add(np.array([[1, 5], [-3, 2]], np.int64))
    r.add(np.array([np.nan, -np.inf, 0.5], np.float16))
    assert (r.min, r.max, r.count, r.nonfinite, r.absmax) == (-3.0, 5.0, 5, 2, 5.0)
    h = StreamingHistogram(16)
    h.add(np.zeros(10, np.float32))  # all zeros first: no bound yet
    h.add(np.array([0.0, 1.0, -1.0], np.float32))
    assert h.zeros == 11 and h.pos[0] == 11 and h.pos[-1] == 1 and h.neg[-1] == 1 and h.bound == pytest.approx(1.0)


def _naive_kl(h: np.ndarray, levels: int) -> np.ndarray:
    """The definition, one candidate at a time (see kl_divergences)."""
    h = h.astype(np.float64)
    out = []
    for i in range(levels, h.size + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        group = (np.arange(i) * levels) // i
        q = np.zeros(i)
        for g in range(levels):
            members = group == g
            support = members & (p > 0)
            if support.any():
                q[support] = h[:i][members].sum() / support.sum()
        if q[-1] == 0 and p[-1] > 0:
            q[-1] = KL_EPS
        if h[:i].sum() == 0:
            out.append(np.inf)
            continue
        pn, qn = p / p.sum(), q / q.sum()
        m = pn > 0
        out.append(float(np.sum(pn[m] * np.log(pn[m] / qn[m]))))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_divergences_match_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 50, size=300) * (rng.random(300) < 0.7)
    h[240:290] = 0  # an empty stretch before the tail: the floored-Q case
    h[:5] = 0
    cand, kl = kl_divergences(h, 16)
    assert list(cand) == list(range(16, 301))
    np.testing.assert_allclose(kl, _naive_kl(h, 16), rtol=1e-9, atol=1e-12)


def _hist(values: np.ndarray, num_bins: int = 2048) -> StreamingHistogram:
    h = StreamingHistogram(num_bins)
    for chunk in np.array_split(values.astype(np.float32), 7):
        h.add(chunk)
    return h


def test_entropy_on_uniform_data_keeps_the_whole_range() -> None:
    data = np.random.default_rng(0).uniform(-1, 1, 200000)
    r = compute_range(_hist(data), "entropy", symmetric=True)
    assert r.max == pytest.approx(1.0, abs=0.01) and r.min == -r.max


def test_entropy_ignores_exact_zeros() -> None:
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_normal(200000), 0)  # half the values are exactly 0
    h = _hist(relu)
    assert h.zeros == int(np.sum(relu == 0))
    t_with_zeros_removed = entropy_threshold(h.histogram(), 256)
    nonzero = _hist(relu[relu > 0]).histogram()
    shifted = Histogram(nonzero.pos, nonzero.neg, nonzero.bound, 0)
    assert t_with_zeros_removed == pytest.approx(entropy_threshold(shifted, 256), rel=0.05)


def test_degenerate_tensors() -> None:
    for m in ["minmax", "percentile", "entropy", "mse"]:
        zeros = compute_range(_hist(np.zeros(100)), m)
        assert (zeros.min, zeros.max, zeros.count) == (0.0, 0.0, 100)
        assert zeros.scale_zero_point("uint8") == (1.0, 0)
        const = compute_range(_hist(np.full(100, 3.5)), m)
        assert (const.min, const.max) == (3.5, 3.5), m
        scale, zp = const.scale_zero_point("uint8")
        assert zp == 0 and (255 - zp) * scale == pytest.approx(3.5)
        empty = compute_range(StreamingHistogram(), m)
        assert (empty.min, empty.max, empty.count) == (0.0, 0.0, 0)


# -- scale and zero point -------------------------------------------------------------------------


def _roundtrip(x: float, scale: float, zp: int, qtype: str) -> float:
    qmin, qmax = (0, 255) if qtype == "uint8" else (-128, 127)
    q = min(max(round(x / np.float32(scale)) + zp, qmin), qmax)
    return float((q - zp) * np.float32(scale))


@pytest.mark.parametrize("qtype", ["uint8", "int8"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_scale_zero_point_properties(qtype: str, symmetric: bool) -> None:
    rng = np.random.default_rng(1)
    ranges = [(float(a), float(b)) for a, b in rng.normal(0, 10, (200, 2))]
    ranges += [(0.0, 0.0), (0.0, 6.0), (-3.0, 0.0), (2.0, 5.0), (-7.0, -1.0), (-1e-30, 1e-30), (-1e-45, 0.0)]
    for a, b in ranges:
        lo, hi = min(a, b), max(a, b)
        scale, zp = scale_zero_point(lo, hi, qtype, symmetric)  # type: ignore[arg-type]
        assert scale > 0 and math.isfinite(scale) and isinstance(zp, int)
        assert scale == float(np.float32(scale))  # stored as float32
        assert _roundtrip(0.0, scale, zp, qtype) == 0.0  # zero is exact
        if qtype == "uint8":
            assert 0 <= zp <= 255
        else:
            assert -128 <= zp <= 127
        if symmetric:
            assert zp == (0 if qtype == "int8" else 128)
            assert scale == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-6) or max(abs(lo), abs(hi)) < 1e-37
        # the range ends (and 0) are representable to within half a step
        for x in (min(lo, 0.0), max(hi, 0.0)):
            assert abs(_roundtrip(x, scale, zp, qtype) - x) <= scale / 2 * 1.0001 + 1e-45


def test_scale_zero_point_examples_and_errors() -> None:
    assert scale_zero_point(0.0, 2.55, "uint8") == (pytest.approx(0.01), 0)
    assert scale_zero_point(-1.0, 1.0, "uint8")[1] in (127, 128)
    scale, zp = scale_zero_point(-1.0, 1.0, "int8")
    assert scale == pytest.approx(2 / 255) and zp in (-1, 0)
    assert scale_zero_point(-2.0, 1.0, "int8", symmetric=True) == (pytest.approx(2 / 127), 0)
    assert scale_zero_point(0.0, 0.0, "int8") == (1.0, -128)
    with pytest.raises(UsageError, match="unsupported quantized type 'int4'"):
        scale_zero_point(0.0, 1.0, "int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite"):
        scale_zero_point(0.0, math.inf)


def test_compute_range_argument_errors() -> None:
    with pytest.raises(UsageError, match="unknown calibration method 'kl'"):
        compute_range(_hist(np.ones(3)), "kl")
    with pytest.raises(TypeError, match="needs a StreamingHistogram"):
        compute_range(RunningMinMax(), "entropy")
