"""Post-training repair of pruned layers from calibration statistics, without a training loop.

Every function works on one group of a layer's matrix: ``w`` is ``[rows, D]`` with the bias as
its last column (the intercept, never pruned), ``H = XᵀX`` (``[D, D]``) the Gram matrix of the
inputs the pruned layer will see, and ``B`` the right-hand side of the normal equations of the
fit: ``B = W₀ X₀ᵀX`` reproduces the original layer's outputs (``X₀``: the inputs the original
layer saw, :class:`~onnxforge.passes.compression.pruning.statistics.InputStats.cross`), and
``B = W H`` reproduces the layer's own outputs on the same inputs. ``H`` is damped by
``λ = damp · mean(diag H)`` on the diagonal *towards the original weights* (:func:`toward`): the
fit minimises ``‖Xw − y‖² + λ‖w − w₀‖²``, so that where the calibration data says little (fewer
rows than features: MiniLM's 32 sentences give ~400 tokens for a 1536-wide layer) the weights
stay what they were instead of shrinking to zero.

* :func:`masked_least_squares`: for a fixed mask, the kept weights of every row that minimise
  ``‖X w_S − y‖²``: preconditioned conjugate gradients on all rows at once (each row has its
  own kept set), one ``[rows, D] × [D, D]`` product per iteration;
* :func:`sparsegpt`: optimal-brain-surgeon pruning with row updates (SparseGPT, Frantar and
  Alistarh 2023): columns are pruned left to right and the error of each is spread over the
  columns not yet visited through the Cholesky factor of ``H⁻¹``; the mask is chosen on the way
  (unstructured per block of columns, or N:M);
* :func:`solve_rows`: the dense fit ``B H⁻¹`` (every weight free), used for channel pruning's
  repair of the next layer, whose kept input columns are the same for every row.
"""

from __future__ import annotations

import numpy as np


def damped(h: np.ndarray, damp: float) -> np.ndarray:
    """``h + λI`` with ``λ = damp · mean(diag h)`` (a tiny floor when the diagonal is zero)."""
    diag = np.diagonal(h)
    lam = damp * float(np.mean(diag)) if diag.size else 0.0
    if not lam > 0:
        lam = 1e-8
    out = np.array(h, np.float64, copy=True)
    out[np.diag_indices_from(out)] += lam
    return out


def toward(h: np.ndarray, b: np.ndarray, w0: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """``(H + λI, B + λW₀)``: the normal equations of the fit regularized towards ``w0`` (rows
    of ``B``; module docstring)."""
    diag = np.diagonal(h)
    lam = damp * float(np.mean(diag)) if diag.size else 0.0
    if not lam > 0:
        lam = 1e-8
    out = np.array(h, np.float64, copy=True)
    out[np.diag_indices_from(out)] += lam
    return out, b + lam * w0


def solve_rows(h: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``B H⁻¹`` for a symmetric positive definite ``H`` (Cholesky; least squares if that fails)."""
    try:
        c = np.linalg.cholesky(h)
        y = np.linalg.solve(c, b.T)
        return np.linalg.solve(c.T, y).T
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(h, b.T, rcond=None)[0].T


def masked_least_squares(
    w: np.ndarray,
    mask: np.ndarray,
    h: np.ndarray,
    b: np.ndarray,
    *,
    max_iter: int = 150,
    tol: float = 1e-7,
) -> np.ndarray:
    """Rows of ``w`` refitted on their kept entries (``mask``), pruned entries exactly zero
    (module docstring). Starts from ``w * mask``; stops when every row's squared residual is
    below ``tol`` times its right-hand side's, or after ``max_iter`` iterations."""
    m = mask.astype(np.float64)
    x = np.asarray(w, np.float64) * m
    h32 = np.asarray(h, np.float32)  # the product that costs: in float32 (the sums stay float64)
    r = (b - x @ h) * m
    diag = np.diagonal(h)[None, :]
    d = np.where(m > 0, diag, 1.0)
    d = np.where(d > 0, d, 1.0)
    z = r / d
    p = z.copy()
    rz = np.einsum("ij,ij->i", r, z)
    stop = tol * np.maximum(np.einsum("ij,ij->i", b * m, b * m), 1e-300)
    for _ in range(max_iter):
        if np.all(np.einsum("ij,ij->i", r, r) <= stop):
            break
        ap = (p.astype(np.float32) @ h32).astype(np.float64) * m
        den = np.einsum("ij,ij->i", p, ap)
        alpha = np.where(den > 0, rz / np.where(den > 0, den, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        z = r / d
        rz_new = np.einsum("ij,ij->i", r, z)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta[:, None] * p
        rz = rz_new
    return x * m


def sparsegpt(
    w: np.ndarray,
    h: np.ndarray,
    sparsity: float,
    prunable: np.ndarray,
    *,
    nm: tuple[int, int] | None = None,
    block: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT on ``w`` (``[rows, D]``) with damped Gram ``h``: returns the updated weights
    and the keep-mask. ``prunable`` (``[D]``) marks columns that may be zeroed (the bias column
    may not). With ``nm = (n, m)`` every ``m`` consecutive prunable columns keep ``n``; the
    caller orders columns so that those are input channels of one kernel position."""
    w = np.array(w, np.float64, copy=True)
    rows, dim = w.shape
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H^-1
    except np.linalg.LinAlgError:
        u = np.linalg.cholesky(np.linalg.inv(damped(h, 0.1))).T
    mask = np.ones((rows, dim), bool)
    for i1 in range(0, dim, block):
        i2 = min(i1 + block, dim)
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        can = prunable[i1:i2]
        prune1 = np.zeros(w1.shape, bool)
        if nm is None and sparsity > 0 and can.any():
            saliency = w1**2 / np.diagonal(u1)[None, :] ** 2
            saliency[:, ~can] = np.inf
            k = int(round(sparsity * rows * int(can.sum())))
            if k > 0:
                flat = np.argsort(saliency, axis=None, kind="stable")[:k]
                prune1.reshape(-1)[flat] = True
        for i in range(i2 - i1):
            if nm is not None and can[i] and (i % nm[1] == 0):
                n, m = nm
                span = min(m, i2 - i1 - i)
                saliency = w1[:, i : i + span] ** 2 / np.diagonal(u1)[None, i : i + span] ** 2
                order = np.argsort(saliency, axis=1, kind="stable")[:, : span - n]
                np.put_along_axis(prune1[:, i : i + span], order, True, axis=1)
            col = w1[:, i]
            q = np.where(prune1[:, i], 0.0, col)
            e = (col - q) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            q1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = q1
        mask[:, i1:i2] = ~prune1
        if i2 < dim:
            w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w, mask


def output_error(w_new: np.ndarray, h: np.ndarray, b: np.ndarray, w0_energy: float) -> float:
    """Relative squared output error ``‖Xw' − y‖² / ‖y‖²`` up to the constant ``‖y‖²`` the
    caller passes (``w0_energy``), from the statistics alone."""
    if w0_energy <= 0:
        return 0.0
    # ‖Xw − y‖² = wHwᵀ − 2 w·B + ‖y‖² (summed over rows)
    quad = float(np.einsum("ij,jk,ik->", w_new, h, w_new))
    lin = float(np.einsum("ij,ij->", w_new, b))
    return max(0.0, (quad - 2 * lin + w0_energy) / w0_energy)


__all__ = ["damped", "masked_least_squares", "output_error", "solve_rows", "sparsegpt", "toward"]
