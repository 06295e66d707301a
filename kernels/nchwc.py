"""onnxruntime's NCHWc blocked layout (``com.microsoft.nchwc``), in numpy.

onnxruntime's CPU provider (MLAS) runs convolutions and pooling fastest on tensors whose
channels are split into blocks of ``B`` (8 with AVX2, 16 with AVX-512): a tensor of logical
shape ``[N, C, H, W]`` is stored as ``[N, C/B, H, W, B]`` with ``C`` rounded up to a multiple of
``B`` and zeros in the padding. The tensor keeps the declared shape ``[N, Cpad, H, W]``; only the
order of its elements changes. The filters of its ``Conv`` are stored pre-reordered:

* ``OIHWBiBo`` (ordinary convolutions on blocked input): ``[O/B, I/B, kH, kW, Bi, Bo]``;
* ``OIHWBo`` (depthwise convolutions, and convolutions reading a plain NCHW input with fewer
  than ``B`` channels): ``[O/B, I, kH, kW, Bo]``.

Both keep the declared shape ``[Opad, Ipad, kH, kW]``. :func:`onnxforge.runtime.choices.nchwc_block_size`
checks these functions against the layouts the installed onnxruntime writes itself.
"""

from __future__ import annotations

import numpy as np


def round_up(channels: int, block: int) -> int:
    """``channels`` rounded up to a multiple of ``block``."""
    return (channels + block - 1) // block * block


def reorder_filter_oihwbibo(w: np.ndarray, block: int, in_channels: int | None = None) -> np.ndarray:
    """A ``[O, I, kH, kW]`` filter in the ``OIHWBiBo`` layout, output channels zero-padded to
    the block and input channels zero-padded to ``in_channels`` (default: ``I`` rounded up)."""
    o, i, kh, kw = w.shape
    op = round_up(o, block)
    ip = round_up(i, block) if in_channels is None else in_channels
    if ip % block or ip < i:
        raise ValueError(f"input channels {ip} must be a multiple of {block} and at least {i}")
    padded = np.zeros((op, ip, kh, kw), dtype=w.dtype)
    padded[:o, :i] = w
    blocked = padded.reshape(op // block, block, ip // block, block, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    return np.ascontiguousarray(blocked).reshape(op, ip, kh, kw)


def reorder_filter_oihwbo(w: np.ndarray, block: int) -> np.ndarray:
    """A ``[O, I, kH, kW]`` filter in the ``OIHWBo`` layout, output channels zero-padded."""
    o, i, kh, kw = w.shape
    op = round_up(o, block)
    padded = np.zeros((op, i, kh, kw), dtype=w.dtype)
    padded[:o] = w
    blocked = padded.reshape(op // block, block, i, kh, kw).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(blocked).reshape(op, i, kh, kw)


def pad_channels(v: np.ndarray, block: int) -> np.ndarray:
    """A per-channel vector (a bias) zero-padded to a multiple of ``block``."""
    out = np.zeros(round_up(v.shape[0], block), dtype=v.dtype)
    out[: v.shape[0]] = v
    return out


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """``[N, C, H, W]`` → the NCHWc memory order, as an array of shape ``[N, Cpad, H, W]``."""
    n, c, h, w = x.shape
    cp = round_up(c, block)
    padded = np.zeros((n, cp, h, w), dtype=x.dtype)
    padded[:, :c] = x
    return np.ascontiguousarray(padded.reshape(n, cp // block, block, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, cp, h, w)


def from_blocked(x: np.ndarray, block: int, channels: int) -> np.ndarray:
    """Inverse of :func:`to_blocked`: the first ``channels`` channels in plain NCHW order."""
    n, cp, h, w = x.shape
    plain = x.reshape(n, cp // block, h, w, block).transpose(0, 1, 4, 2, 3).reshape(n, cp, h, w)
    return np.ascontiguousarray(plain[:, :channels])
