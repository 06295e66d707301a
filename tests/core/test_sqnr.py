"""SQNR and cosine similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxforge.metrics.sqnr import cosine, sqnr_db


def test_sqnr_equal_is_infinite() -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert sqnr_db(x, x.copy()) == math.inf
    assert sqnr_db(np.zeros(0), np.zeros(0)) == math.inf


def test_sqnr_known_noise() -> None:
    ref = np.full(1000, 2.0)  # signal power 4 per element
    noise = 0.02 * np.where(np.arange(1000) % 2, 1.0, -1.0)  # noise power 4e-4
    assert sqnr_db(ref, ref + noise) == pytest.approx(40.0, abs=1e-9)
    assert sqnr_db(ref, ref + 10 * noise) == pytest.approx(20.0, abs=1e-9)
    assert sqnr_db(ref.astype(np.float16), (ref + noise).astype(np.float16)) == pytest.approx(40.0, abs=0.5)


def test_sqnr_of_8bit_quantization_is_about_6db_per_bit() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 100000)
    scale = 2 / 255
    q = np.round(x / scale) * scale
    assert 46 < sqnr_db(x, q) < 50  # ~ 6.02 * 8 dB for a full-scale uniform signal


def test_sqnr_edge_cases() -> None:
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert math.isnan(sqnr_db(np.array([1.0, np.nan]), np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="shapes differ"):
        sqnr_db(np.zeros(3), np.zeros(4))


def test_cosine() -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert cosine(a, 2 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(0.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), a) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        cosine(a, a[:2])


def test_error_pairs_pool_samples_skip_empty_taps_and_mask_padding() -> None:
    from onnxforge.metrics.sqnr import ErrorPairs

    ref = np.arange(1, 7, dtype=np.float32).reshape(1, 3, 2)
    noisy = ref.copy()
    noisy[0, 2] += 100.0  # noise only at the padded position
    pairs = ErrorPairs("mask")
    feed = {"mask": np.array([[1, 1, 0]])}
    pairs.add("h", ref, noisy, feed)
    pairs.add("h", np.zeros(0, np.float32), np.zeros(0, np.float32), feed)  # a branch that did not run
    pairs.add("h", ref, noisy[:, :2], feed)  # shapes differ: ignored
    assert "h" in pairs and "other" not in pairs
    assert pairs.sqnr("h") == float("inf") and pairs.worst_cosine("h") == pytest.approx(1.0)
    unmasked = ErrorPairs()
    unmasked.add("h", ref, ref, feed)
    unmasked.add("h", ref, noisy, feed)
    assert unmasked.sqnr("h") == pytest.approx(sqnr_db(np.concatenate([ref, ref]), np.concatenate([ref, noisy])))
    assert unmasked.worst_cosine("h") == pytest.approx(cosine(ref, noisy))
    assert math.isnan(unmasked.sqnr("missing"))


def test_inf_or_nan_in_the_quantized_tensor_is_a_failed_measure() -> None:
    """A quantized tensor with Inf or NaN where the float one is finite has no SQNR or cosine:
    NaN, which every bound treats as failing (no math domain error, no accidental pass)."""
    from onnxforge.metrics.sqnr import below, worst

    ref = np.array([1.0, 2.0, 3.0])
    for bad in (np.array([1.0, np.inf, 3.0]), np.array([1.0, np.nan, 3.0]), np.array([-np.inf, 2.0, 3.0])):
        assert math.isnan(sqnr_db(ref, bad)) and math.isnan(cosine(ref, bad))
        assert below(sqnr_db(ref, bad), -1000.0) and below(cosine(ref, bad), -1.0)
    # the same non-finite value at the same place in both is not noise
    same = np.array([1.0, np.inf, np.nan])
    assert sqnr_db(same, same.copy()) == math.inf and cosine(same, same.copy()) == pytest.approx(1.0)
    assert not below(0.995, 0.99) and below(0.98, 0.99)
    assert math.isnan(worst([1.0, math.nan, 0.5])) and math.isnan(worst([math.nan, 1.0]))
    assert worst([1.0, 0.5]) == 0.5 and worst([]) == math.inf


def test_worst_cosine_is_nan_when_any_sample_is_not_finite() -> None:
    from onnxforge.metrics.sqnr import ErrorPairs

    ref = np.ones((1, 4), np.float32)
    for order in ((ref, ref * np.nan), (ref * np.nan, ref)):
        pairs = ErrorPairs()
        for bad in order:
            pairs.add("y", ref, bad, {})
        assert math.isnan(pairs.worst_cosine("y")) and math.isnan(pairs.sqnr("y"))
