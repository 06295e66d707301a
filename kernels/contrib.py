"""Kernels of the onnxruntime contrib (``com.microsoft``) operators the compiler emits.

The numpy semantics of the packed-weight operators that codebook and low-bit weights are
lowered to (:mod:`onnxforge.passes.lowering.onnxruntime.packed_weights`): they document the
layouts and serve as a second oracle beside onnxruntime in the tests. Constant folding never
uses them (it folds default-domain nodes only).

* ``MatMulNBits`` (``bits`` 2, 4 or 8, ``block_size``, ``K``, ``N``): ``B`` uint8
  ``[N, ceil(K / block), block * bits / 8]``, the codes of column ``n`` along K packed from the
  lowest bits of each byte up; ``scales`` ``[N, blocks]`` (or flat); ``zero_points`` uint8
  ``[N, ceil(blocks * bits / 8)]`` packed the same way (absent: ``2^(bits-1)``); optional
  ``bias`` (input 5). ``Y = A @ ((B - zp) * scale)^T``.
* ``GatherBlockQuantized`` (uint8 data, ``bits`` 4 or 8, ``gather_axis`` 0, ``quantize_axis``
  the last, ``block_size``): data ``[V, H * bits / 8]`` packed like ``B``, ``scales``
  ``[V, H / block]``, ``zero_points`` packed like the data (absent: ``2^(bits-1)``);
  ``Y = ((data[indices] - zp) * scale)``.
"""

from __future__ import annotations

import math

import numpy as np

from onnxforge.kernels.kernel import InvalidInputs, KernelCall, KernelSet, Unsupported

MS_DOMAIN = "com.microsoft"

#: The kernels this module defines (collected by onnxforge.kernels.table).
KERNELS = KernelSet()


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``count`` codes of ``bits`` bits along the last axis of ``packed`` (lowest bits first)."""
    per = 8 // bits
    mask = (1 << bits) - 1
    p = np.asarray(packed, np.uint8)
    parts = [(p >> (bits * j)) & mask for j in range(per)]
    out = np.stack(parts, axis=-1).reshape(*p.shape[:-1], p.shape[-1] * per)
    return out[..., :count]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes of ``bits`` bits packed along the last axis, lowest bits first (zero-padded)."""
    per = 8 // bits
    c = np.asarray(codes, np.uint8)
    pad = (-c.shape[-1]) % per
    if pad:
        c = np.concatenate([c, np.zeros((*c.shape[:-1], pad), np.uint8)], axis=-1)
    c = c.reshape(*c.shape[:-1], -1, per)
    out = np.zeros(c.shape[:-1], np.uint8)
    for j in range(per):
        out |= (c[..., j] << (bits * j)).astype(np.uint8)
    return out


def _bits(call: KernelCall) -> int:
    bits = int(call.attr("bits", 4))
    if bits not in (2, 4, 8):
        raise Unsupported(f"{call.op_type}: bits={bits}")
    return bits


@KERNELS.register(
    "MatMulNBits", attrs={"K", "N", "bits", "block_size", "accuracy_level"}, domain=MS_DOMAIN
)
def _matmul_nbits(call: KernelCall) -> np.ndarray:
    a, b, scales = call.require(0), call.require(1), call.require(2)
    if call.input(4) is not None:
        raise Unsupported("MatMulNBits: g_idx")
    k, n, block, bits = int(call.attr("K")), int(call.attr("N")), int(call.attr("block_size")), _bits(call)
    blocks = math.ceil(k / block)
    codes = unpack_bits(b.reshape(n, blocks, -1), bits, block).astype(np.float32)  # [N, blocks, block]
    zp_in = call.input(3)
    if zp_in is None:
        zp = np.full((n, blocks), 1 << (bits - 1), np.float32)
    elif zp_in.dtype == np.uint8:
        zp = unpack_bits(zp_in.reshape(n, -1), bits, blocks).astype(np.float32)
    else:
        raise Unsupported("MatMulNBits: float zero points")
    s = scales.reshape(n, blocks).astype(np.float32)
    w = ((codes - zp[:, :, None]) * s[:, :, None]).reshape(n, -1)[:, :k]  # [N, K]
    if a.shape[-1] != k:
        raise InvalidInputs(f"MatMulNBits: A has {a.shape[-1]} columns, K is {k}")
    y = (a.astype(np.float64) @ w.T.astype(np.float64)).astype(a.dtype)
    bias = call.input(5)
    return y + bias if bias is not None else y


@KERNELS.register(
    "GatherBlockQuantized", attrs={"bits", "block_size", "gather_axis", "quantize_axis"}, domain=MS_DOMAIN
)
def _gather_block_quantized(call: KernelCall) -> np.ndarray:
    data, idx, scales = call.require(0), call.require(1), call.require(2)
    bits = _bits(call)
    if data.dtype != np.uint8 or int(call.attr("gather_axis", 0)) != 0 or int(call.attr("quantize_axis", 1)) not in (-1, data.ndim - 1):
        raise Unsupported("GatherBlockQuantized: only uint8 data, gather_axis 0 and the last quantize_axis")
    block = int(call.attr("block_size", 128))
    v = data.shape[0]
    h = data.shape[-1] * (8 // bits)
    blocks = h // block
    codes = unpack_bits(data, bits, h).astype(np.float32)
    zp_in = call.input(3)
    zp = np.full((v, blocks), 1 << (bits - 1), np.float32) if zp_in is None else unpack_bits(zp_in, bits, blocks).astype(np.float32)
    table = ((codes.reshape(v, blocks, block) - zp[:, :, None]) * scales.reshape(v, blocks, 1)).reshape(v, h)
    i = np.asarray(idx, np.int64)
    if np.any(i < -v) or np.any(i >= v):
        raise InvalidInputs("GatherBlockQuantized: index out of range")
    return table[np.where(i < 0, i + v, i)].astype(scales.dtype)
