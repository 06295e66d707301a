"""Error measures between a float reference tensor and its quantized counterpart.

Used by the per-layer error reports of the quantizer (in the spirit of onnxruntime's
``qdq_loss_debug``): the same tensor from the float model and from the quantized model.

* :func:`sqnr_db`: signal-to-quantization-noise ratio, ``10 * log10(sum(ref**2) / sum((ref -
  actual)**2))``. Higher is better; +inf when the tensors are equal, about 6 dB per bit for a
  well-ranged uniform quantizer (8 bits on a uniform signal: ~48 dB).
* :func:`cosine`: cosine similarity of the flattened tensors, 1 for identical directions.
* :class:`ErrorPairs`: both over many samples, per tensor name, on real positions only when a
  padding mask is given (see :mod:`onnxforge.quantize.padding`).

Both compute in float64, so float16 inputs do not overflow; NaN anywhere gives NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from onnxforge.quantize.padding import valid_positions


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


class ErrorPairs:
    """Float and quantized values of named tensors collected over samples.

    :meth:`add` keeps a pair only when both are arrays of the same non-empty shape (an If
    branch that did not run yields an empty tap), restricted to the positions the sample's
    ``padding_mask`` input marks as real. :meth:`sqnr` pools every sample; :meth:`worst_cosine`
    is the cosine of the worst sample.
    """

    def __init__(self, padding_mask: str | None = None) -> None:
        self.padding_mask = padding_mask
        self._pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, name: str, reference: object, actual: object, feed: Mapping[str, object]) -> None:
        if not (isinstance(reference, np.ndarray) and isinstance(actual, np.ndarray)):
            return
        if reference.shape != actual.shape or not reference.size:
            return
        key = self.padding_mask
        mask = np.asarray(feed[key]) if key and key in feed else None
        self._pairs.setdefault(name, []).append((valid_positions(reference, mask), valid_positions(actual, mask)))

    def __contains__(self, name: object) -> bool:
        return name in self._pairs

    def sqnr(self, name: str) -> float:
        """SQNR over all samples pooled (NaN when nothing was collected)."""
        pairs = self._pairs.get(name)
        if not pairs:
            return math.nan
        return sqnr_db(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))

    def worst_cosine(self, name: str) -> float:
        """The lowest per-sample cosine similarity (NaN when nothing was collected)."""
        pairs = self._pairs.get(name)
        return min(cosine(a, b) for a, b in pairs) if pairs else math.nan
