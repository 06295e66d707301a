"""Bits per layer under a total size: spend the bits where the outputs are most sensitive.

A lossy pass that stores every weight at ``b`` bits can instead keep the same number of bits
in total and move them: a layer whose error barely reaches the outputs gives bits to one whose
error does (HAWQ-style mixed precision, here with measured sensitivities instead of Hessian
traces). :func:`allocate_bits` takes each layer's output noise measured at ``b`` bits alone
(:func:`onnxforge.calibration.sensitivity.sensitivity_ranking`) and its element count, models
the noise at other widths by ``step_db`` per bit (6 dB, the quantization-noise rule, by
default), and minimizes the summed noise with the total no larger than ``b`` bits per element.

That is a multiple-choice knapsack, solved exactly by dynamic programming over the bits added
or removed against the uniform width, counted in units of the sizes' common factor or of
1/``resolution`` of the largest possible change if coarser (each layer's change rounded up,
so the result always fits):
O(layers x choices x resolution), a few milliseconds for a transformer's weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["allocate_bits", "allocate_levels", "noise_power"]


def noise_power(sqnr_db: float) -> float:
    """Noise power relative to the signal, from an SQNR in dB (NaN, a non-finite output: inf)."""
    if math.isnan(sqnr_db):
        return math.inf
    return 10.0 ** (-sqnr_db / 10.0)


def allocate_bits(
    noise: Mapping[str, float],
    elements: Mapping[str, int],
    bits: int,
    choices: Mapping[str, range],
    *,
    step_db: float = 6.02,
    resolution: int = 1 << 16,
) -> dict[str, int]:
    """Bits for every layer of ``noise`` (its output noise power with that layer alone at
    ``bits``; :func:`noise_power`), each from its ``choices`` (which must hold ``bits``), so that
    the sum of ``elements * bits`` does not exceed ``bits`` times the elements and the predicted
    summed noise (``step_db`` less per added bit) is smallest. A layer of infinite noise (an
    output turned non-finite) takes its most bits, and the others share what is left; ties go to
    fewer bits."""
    for n in noise:
        if bits not in choices[n]:
            raise ValueError(f"{n}: the choices {list(choices[n])} do not hold {bits} bits")
    ratio = 10.0 ** (step_db / 10.0)
    fixed = {n: max(choices[n]) for n, v in noise.items() if math.isinf(v)}
    table = {n: {b: (0.0 if v == 0 else v * ratio ** (bits - b)) for b in choices[n]} for n, v in noise.items() if n not in fixed}
    # what the fixed layers add over the uniform width, the others must give back
    owed = sum(elements[n] * (b - bits) for n, b in fixed.items())
    return {**allocate_levels(table, elements, bits, owed=owed, resolution=resolution), **fixed}


def allocate_levels(
    noise: Mapping[str, Mapping[int, float]],
    elements: Mapping[str, int],
    level: int,
    *,
    owed: int = 0,
    resolution: int = 1 << 16,
) -> dict[str, int]:
    """The level of every layer of ``noise`` (``noise[layer][level]``: the predicted output
    noise of that layer at that level; its keys are the layer's choices, ``level`` among them)
    that minimizes the summed noise with ``sum(elements * (chosen - level)) <= -owed``: the
    multiple-choice knapsack behind :func:`allocate_bits`, for any cost in elements times
    level (bits per weight, kept weights per tenth of a layer, ...). Ties go to lower levels."""
    names = list(noise)
    if not names:
        return {}
    choices = {n: sorted(noise[n]) for n in names}
    for n in names:
        if level not in noise[n]:
            raise ValueError(f"{n}: the choices {choices[n]} do not hold level {level}")
    span = sum(elements[n] * (choices[n][-1] - choices[n][0]) for n in names)
    g = math.gcd(*(elements[n] for n in names)) or 1  # exact when the sizes share a factor
    unit = g * max(1, math.ceil(span / g / resolution))
    lows = [math.floor(elements[n] * (choices[n][0] - level) / unit) for n in names]
    floor_ = sum(lows)
    size = span // unit + 2 * len(names) + 2  # every reachable sum of rounded changes, less floor_
    cost = np.full(size, np.inf)
    cost[0] = 0.0
    back = np.zeros((len(names), size), np.int8)
    for i, n in enumerate(names):
        new = np.full(size, np.inf)
        for j, b in enumerate(choices[n]):
            step = math.ceil(elements[n] * (b - level) / unit) - lows[i]  # >= 0
            cand = np.full(size, np.inf)
            cand[step:] = cost[: size - step] + noise[n][b]
            better = cand < new
            new[better] = cand[better]
            back[i][better] = j
        cost = new
    # states whose summed change (index + floor_) fits: <= -owed, in units rounded down
    limit = math.floor(-owed / unit) - floor_
    if limit < 0:  # even the lowest levels everywhere exceed the total: take them
        return {n: choices[n][0] for n in names}
    limit = min(limit, size - 1)
    state = int(np.argmin(cost[: limit + 1]))
    out: dict[str, int] = {}
    for i in range(len(names) - 1, -1, -1):
        n = names[i]
        b = choices[n][int(back[i][state])]
        out[n] = b
        state -= math.ceil(elements[n] * (b - level) / unit) - lows[i]
    return out
