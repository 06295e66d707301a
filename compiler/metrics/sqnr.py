"""Error measures between a float reference tensor and its quantized counterpart.

Used by the per-layer error reports of the quantizer (in the spirit of onnxruntime's
``qdq_loss_debug``): the same tensor from the float model and from the quantized model.

* :func:`sqnr_db`: signal-to-quantization-noise ratio, ``10 * log10(sum(ref**2) / sum((ref -
  actual)**2))``. Higher is better; +inf when the tensors are equal, about 6 dB per bit for a
  well-ranged uniform quantizer (8 bits on a uniform signal: ~48 dB).
* :func:`cosine`: cosine similarity of the flattened tensors, 1 for identical directions.
* :class:`ErrorPairs`: both over many samples, per tensor name, on real positions only when a
  padding mask is given (see :mod:`onnxforge.metrics.padding`).

Both compute in float64, so float16 inputs do not overflow. A non-finite value (NaN, +-Inf) in
one tensor where the other does not hold the very same value gives NaN: there is no error
measure then, and every bound must count it as failed (:func:`below`, :func:`worst`); the same
non-finite value at the same position in both is not noise and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike

from onnxforge.metrics.padding import valid_positions


def _pair(reference: ArrayLike, actual: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Both tensors flattened in float64 without the positions where they hold the same
    non-finite value; None when a non-finite value is not matched in the other tensor."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {act.shape}")
    ref, act = ref.ravel(), act.ravel()
    finite_ref, finite_act = np.isfinite(ref), np.isfinite(act)
    if finite_ref.all() and finite_act.all():
        return ref, act
    same = (np.isnan(ref) & np.isnan(act)) | (~finite_ref & (ref == act))
    keep = finite_ref & finite_act
    if not (keep | same).all():
        return None
    return ref[keep], act[keep]


def below(value: float, bound: float) -> bool:
    """Whether ``value`` fails the lower bound ``bound``: NaN (no measure) always fails."""
    return not value >= bound


def worst(values: Iterable[float]) -> float:
    """The lowest of ``values``, NaN if any is NaN (builtin ``min`` keeps or drops a NaN
    depending on where it sits), +inf when there are none."""
    out = math.inf
    for v in values:
        if math.isnan(v):
            return math.nan
        out = min(out, v)
    return out


def sqnr_db(reference: ArrayLike, actual: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB.

    +inf when they are equal (no noise, empty tensors included); -inf when the reference is all
    zeros but ``actual`` is not (noise without signal); NaN when one holds a non-finite value the
    other does not (see the module docstring).
    """
    pair = _pair(reference, actual)
    if pair is None:
        return math.nan
    ref, act = pair
    noise = float(np.dot(ref - act, ref - act))
    signal = float(np.dot(ref, ref))
    if not (math.isfinite(noise) and math.isfinite(signal)):  # float64 overflow
        return math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two tensors of the same shape (flattened).

    1.0 when both are all zeros (identical), 0.0 when exactly one is; NaN when one holds a
    non-finite value the other does not.
    """
    pair = _pair(a, b)
    if pair is None:
        return math.nan
    x, y = pair
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if not (math.isfinite(nx) and math.isfinite(ny)):
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
        """The lowest per-sample cosine similarity (NaN when nothing was collected or when any
        sample has no cosine)."""
        pairs = self._pairs.get(name)
        return worst(cosine(a, b) for a, b in pairs) if pairs else math.nan
