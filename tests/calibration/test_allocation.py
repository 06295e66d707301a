"""Bits per layer under a total size (:mod:`onnxforge.calibration.allocation`): the total never
exceeds the uniform width's, sensitive layers get the bits, and the result is the brute-force
optimum of the noise model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from onnxforge.calibration.allocation import allocate_bits, noise_power


def _predicted(noise, alloc, bits):
    return sum(noise[n] * 4.0 ** (bits - b) if noise[n] else 0.0 for n, b in alloc.items())


def test_noise_power_from_sqnr():
    assert noise_power(20.0) == pytest.approx(0.01)
    assert noise_power(math.inf) == 0.0
    assert math.isinf(noise_power(math.nan))


def test_equal_noise_per_element_keeps_every_layer_at_the_asked_bits():
    elements = {"a": 100, "b": 400, "c": 1600}
    noise = {n: 1e-3 * k for n, k in elements.items()}  # noise in proportion to size
    choices = {n: range(2, 7) for n in elements}
    assert allocate_bits(noise, elements, 4, choices) == {"a": 4, "b": 4, "c": 4}


def test_a_large_insensitive_layer_pays_for_the_sensitive_ones():
    # an embedding-like table: 100x the elements and barely felt at the outputs
    elements = {"table": 100_000, "q": 1_000, "ffn": 4_000}
    noise = {"table": 1e-4, "q": 1e-4, "ffn": 1e-2}
    choices = {n: range(2, 7) for n in elements}
    got = allocate_bits(noise, elements, 4, choices)
    assert got["table"] < 4 < got["ffn"] and got["q"] >= 4
    assert sum(elements[n] * b for n, b in got.items()) <= 4 * sum(elements.values())
    assert _predicted(noise, got, 4) < _predicted(noise, dict.fromkeys(noise, 4), 4) / 3


def test_matches_the_brute_force_optimum_on_small_cases():
    rng = np.random.default_rng(0)
    for _ in range(60):
        names = [f"w{i}" for i in range(4)]
        elements = {n: int(rng.choice([64, 256, 1024, 4096])) for n in names}
        noise = {n: float(10 ** rng.uniform(-5, -1)) for n in names}
        choices = {n: range(2, 7) for n in names}
        got = allocate_bits(noise, elements, 4, choices)
        budget = 4 * sum(elements.values())
        assert sum(elements[n] * got[n] for n in names) <= budget
        best = min(
            _predicted(noise, dict(zip(names, combo)), 4)
            for combo in itertools.product(range(2, 7), repeat=len(names))
            if sum(elements[n] * b for n, b in zip(names, combo)) <= budget
        )
        # exact: the sizes share a factor of 64, the unit the bits are counted in
        assert _predicted(noise, got, 4) <= best * (1 + 1e-9)


def test_a_non_finite_layer_takes_its_most_bits_and_choices_must_hold_the_mean():
    elements = {"bad": 100, "x": 1000, "y": 1000}
    noise = {"bad": math.inf, "x": 1e-3, "y": 1e-4}
    got = allocate_bits(noise, elements, 4, {n: range(3, 7) for n in elements})
    assert got["bad"] == 6 and sum(elements[n] * b for n, b in got.items()) <= 4 * 2100
    with pytest.raises(ValueError, match="do not hold 4 bits"):
        allocate_bits({"x": 1e-3}, {"x": 10}, 4, {"x": range(5, 7)})
