"""Error measures between a float reference tensor and its quantized counterpart.

Used by the per-layer error reports of the quantizer (in the spirit of onnxruntime's
``qdq_loss_debug``): the same tensor from the float model and from the quantized model.

* :func:`sqnr_db`: signal-to-quantization-noise ratio, ``10 * log10(sum(ref**2) / sum((ref -
  actual)**2))``. Higher is better; +inf when the tensors are equal, about 6 dB per bit for a
  well-ranged uniform quantizer (8 bits on a uniform signal: ~48 dB).
* :func:`cosine`: cosine similarity of the flattened tensors, 1 for identical directions.

Both compute in float64, so float16 inputs do not overflow; NaN anywhere gives NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def _pair(reference: ArrayLike, actual: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {act.shape}")
    return ref.ravel(), act.ravel()


def sqnr_db(reference: ArrayLike, actual: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB.

    +inf when they are equal (no noise, empty tensors included); -inf when the reference is all
    zeros but ``actual`` is not (noise without signal).
    """
    ref, act = _pair(reference, actual)
    noise = float(np.dot(ref - act, ref - act))
    signal = float(np.dot(ref, ref))
    if math.isnan(noise) or math.isnan(signal):
        return math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two tensors of the same shape (flattened).

    1.0 when both are all zeros (identical), 0.0 when exactly one is.
    """
    x, y = _pair(a, b)
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if math.isnan(nx) or math.isnan(ny):
        return math.nan
    if nx == 0.0 or ny == 0.0:
        return 1.0 if nx == ny else 0.0
    return float(np.clip(np.dot(x, y) / (nx * ny), -1.0, 1.0))
