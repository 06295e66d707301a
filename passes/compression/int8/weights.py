"""Quantizing constant weights and biases, and the parameters of activation ranges.

* Weights: int8 symmetric, per output channel (``scale = max|w| / 127`` per channel, zero point
  0), or per tensor. The channel axis is 0 for Conv and for Gemm with ``transB=1``, 1 for
  ConvTranspose, MatMul and Gemm without ``transB``.
* Biases: int32 with ``scale = input_scale * weight_scale`` (per channel) and zero point 0, so
  the integer accumulator adds them exactly.
* Activation ranges → (scale, zero point): uint8 asymmetric or int8 symmetric; the range is
  widened to include 0 (so that zero padding is exact) and never has a zero scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxforge.calibration.ranges import scale_zero_point

_TINY = np.float32(1e-12)


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point (scalars, or vectors along ``axis``) and the integer type."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1


def weight_axis(op_type: str, trans_b: bool = False) -> int:
    """The output-channel axis of a weight of ``op_type``."""
    if op_type == "Conv":
        return 0
    if op_type == "Gemm":
        return 0 if trans_b else 1
    return 1  # ConvTranspose [C_in, C_out/g, ...], MatMul [K, N]


def quantize_weight(
    w: np.ndarray, axis: int | None, bits: int = 8, *, pair_limit: int | None = None
) -> tuple[np.ndarray, QuantParams]:
    """Symmetric signed quantization of ``w``: per channel along ``axis``, or per tensor when
    ``axis`` is None. Returns (int8 data, params).

    ``pair_limit`` (per channel only): widen a channel's scale until no two neighbouring codes
    along the reduction dims (the other axes, flattened in order: ``K`` of a MatMul, ``C·kh·kw``
    of a Conv) have absolute values summing past it. CPUs without VNNI add such pairs of
    uint8 x int8 products into int16, which 255 x 128 fills: 128 keeps every sum exact, and
    only the channels that need it lose precision (onnxruntime's ``reduce_range`` takes a bit
    from every weight)."""
    qmax = (1 << (bits - 1)) - 1
    w64 = w.astype(np.float64)
    if axis is None:
        amax = np.asarray(np.abs(w64).max() if w64.size else 0.0)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w64).max(axis=other) if w64.size else np.zeros(w.shape[axis])
    scale = np.maximum(amax / qmax, _TINY).astype(np.float32)
    q = _codes(w64, scale, axis, qmax)
    if pair_limit is not None and axis is not None and w.ndim >= 2:
        worst = _worst_pair(q, axis)
        widen = np.maximum(worst / pair_limit, 1.0)
        while (worst > pair_limit).any():  # rounding can push a pair one code over: widen a little more
            scale = (np.maximum(amax / qmax, _TINY) * widen).astype(np.float32)
            q = _codes(w64, scale, axis, qmax)
            worst = _worst_pair(q, axis)
            widen = np.where(worst > pair_limit, widen * 1.01, widen)
    return q, QuantParams(scale, np.zeros_like(scale, dtype=np.int8), axis)


def _codes(w64: np.ndarray, scale: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
    shape = [1] * w64.ndim
    if axis is not None:
        shape[axis] = -1
    return np.clip(np.rint(w64 / scale.astype(np.float64).reshape(shape)), -qmax, qmax).astype(np.int8)


def _worst_pair(q: np.ndarray, axis: int) -> np.ndarray:
    """Per channel, the largest ``|q[k]| + |q[k + 1]|`` over even ``k`` of the flattened other axes."""
    rows = np.abs(np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1).astype(np.int32))
    if rows.shape[1] % 2:
        rows = np.pad(rows, ((0, 0), (0, 1)))
    return rows.reshape(rows.shape[0], -1, 2).sum(axis=2).max(axis=1)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, QuantParams]:
    """int32 bias with scale ``input_scale * weight_scale`` (per channel), zero point 0."""
    scale = (np.float64(input_scale) * weight_scale.astype(np.float64)).astype(np.float32)
    scale = np.maximum(scale, _TINY)
    q = np.rint(b.astype(np.float64) / scale.astype(np.float64))
    q = np.clip(q, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32)
    axis = 0 if scale.ndim == 1 else None
    return q, QuantParams(scale, zp, axis)


def activation_params(lo: float, hi: float, qtype: str) -> QuantParams:
    """(scale, zero point) covering [lo, hi] (widened to include 0) for ``uint8`` (asymmetric)
    or ``int8`` (symmetric), by the one rule calibration uses
    (:func:`onnxforge.calibration.ranges.scale_zero_point`)."""
    if qtype not in ("int8", "uint8"):
        raise ValueError(f"unknown activation type {qtype!r}")
    scale, zp = scale_zero_point(lo, hi, qtype, symmetric=qtype == "int8")  # type: ignore[arg-type]
    return QuantParams(np.asarray(scale, np.float32), np.asarray(zp, np.int8 if qtype == "int8" else np.uint8))
