"""Which weights to prune: importance scores and the masks they give.

* ``magnitude``: ``|W|``, no data needed;
* ``activation``: ``|W_ij| · ‖x_j‖`` (Wanda, Sun et al. 2023): a weight matters as much as the
  input it multiplies; ``‖x_j‖`` comes from the calibration statistics' Gram diagonal;
* ``second-order`` (OBS/SparseGPT): chosen while pruning, column by column, from
  ``w² / [H⁻¹]_jj²`` with the row updates of :func:`~onnxforge.passes.compression.pruning.reconstruction.sparsegpt`.

Masks are ``True`` where a weight is kept. Unstructured masks keep the same count per row
(``row``: Wanda's comparison group), per layer (``layer``), or from one threshold over every
layer's normalized scores (``global``, :func:`global_sparsities`). N:M masks keep the ``n``
largest of every ``m`` consecutive input channels at each output channel and kernel position,
the layout TensorRT's sparse tensor cores read (for a ``[K, C, R, S]`` convolution weight: groups
of 4 along C; for a matrix: along the reduction dimension K).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SCORES = ("magnitude", "activation", "second-order")
THRESHOLDS = ("row", "layer", "global")


def importance(w: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
    """``|W|`` or ``|W| · ‖x‖`` for a ``[groups, rows, d]`` matrix (``norms``: ``[groups, d]``)."""
    s = np.abs(w)
    if norms is not None:
        s = s * norms[:, None, :]
    return s


def unstructured_mask(scores: np.ndarray, sparsity: float, threshold: str) -> np.ndarray:
    """Keep the largest ``1 - sparsity`` of ``scores`` (``[groups, rows, d]``) per row or per
    layer; ties are broken by position so that the count is exact."""
    if sparsity <= 0:
        return np.ones(scores.shape, bool)
    if threshold == "row":
        d = scores.shape[-1]
        k = min(d, int(round(sparsity * d)))
        order = np.argsort(scores, axis=-1, kind="stable")
        mask = np.ones(scores.shape, bool)
        np.put_along_axis(mask, order[..., :k], False, axis=-1)
        return mask
    flat = scores.reshape(-1)
    k = min(flat.size, int(round(sparsity * flat.size)))
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep.reshape(scores.shape)


def nm_mask(scores: np.ndarray, n: int, m: int, kernel: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive input channels (``[groups, rows,
    channels * kernel]`` scores, columns in (channel, kernel position) order)."""
    g, r, d = scores.shape
    c = d // kernel
    s = scores.reshape(g, r, c // m, m, kernel)
    order = np.argsort(s, axis=3, kind="stable")
    mask = np.ones(s.shape, bool)
    np.put_along_axis(mask, order[:, :, :, : m - n, :], False, axis=3)
    return mask.reshape(g, r, d)


def nm_holds(w: np.ndarray, n: int, m: int, kernel: int) -> bool:
    """Whether a ``[groups, rows, channels * kernel]`` matrix has at most ``n`` non-zeros in every
    group of ``m`` consecutive input channels (the layout check)."""
    g, r, d = w.shape
    if (d // kernel) % m:
        return False
    nz = (w.reshape(g, r, d // kernel // m, m, kernel) != 0).sum(axis=3)
    return bool((nz <= n).all())


def global_sparsities(
    scores: Mapping[str, np.ndarray], sparsity: float, fixed: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-layer sparsities from one threshold over every layer's scores, each layer's scores
    divided by their root mean square (raw activation scores of different layers are not
    comparable; magnitudes of differently initialised layers neither). Layers in ``fixed`` keep
    their given sparsity and count towards the total."""
    fixed = dict(fixed or {})
    free = {k: v for k, v in scores.items() if k not in fixed}
    total = sum(v.size for v in scores.values())
    want = sparsity * total - sum(fixed[k] * scores[k].size for k in fixed if k in scores)
    out = dict(fixed)
    if not free:
        return out
    normalized = []
    for k, v in free.items():
        rms = float(np.sqrt(np.mean(np.square(v, dtype=np.float64)))) or 1.0
        normalized.append((v.reshape(-1) / rms, k))
    flat = np.concatenate([v for v, _ in normalized])
    k_prune = int(np.clip(round(want), 0, flat.size))
    if k_prune == 0:
        return {**out, **{k: 0.0 for k in free}}
    thr = np.partition(flat, k_prune - 1)[k_prune - 1]
    for v, k in normalized:
        out[k] = float(np.count_nonzero(v <= thr)) / max(v.size, 1)
    return out


def sparsity_of(arrays: Sequence[np.ndarray]) -> float:
    total = sum(a.size for a in arrays)
    return float(sum(int(np.count_nonzero(a == 0)) for a in arrays)) / max(total, 1)


__all__ = [
    "SCORES",
    "THRESHOLDS",
    "global_sparsities",
    "importance",
    "nm_holds",
    "nm_mask",
    "sparsity_of",
    "unstructured_mask",
]
