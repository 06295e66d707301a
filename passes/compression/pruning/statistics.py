"""Streaming statistics of the inputs pruned layers see, from calibration data.

For each layer the input activation is turned into the rows of its matrix product (im2col
patches for a convolution, one row per position for Gemm/MatMul, real tokens only when the model
takes a padding mask) with a column of ones appended, and reduced batch by batch into

* ``gram``: ``XᵀX`` of the inputs of the model being pruned (``[groups, d + 1, d + 1]``), the
  second-order statistics of activation-aware scores (its diagonal: ``‖x_j‖²``), of
  second-order (OBS/SparseGPT) pruning and of least-squares reconstruction;
* ``cross``: ``XᵀX₀`` against the *original* model's inputs of the same layer on the same
  samples (``[groups, d + 1, d₀ + 1]``), when asked: reconstruction then fits the original
  layer's outputs from the pruned model's inputs, so each layer also corrects the error of the
  layers pruned before it (sequential pruning, as SparseGPT does).

The model is run on onnxruntime (optimizations off) with the wanted activations exposed as
outputs (:func:`onnxforge.calibration.taps.tapped_model`); each batch's activations are dropped
once reduced, so memory is the statistics of the layers asked for at once plus one batch. The
caller bounds the former by asking for a few layers at a time (:func:`plan_groups`). At most
``max_rows`` rows per layer are drawn (seeded, the same positions in both models) spread evenly
over the batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from onnxforge.calibration.taps import tapped_model
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import Node
from onnxforge.passes.compression.pruning.layers import Layer

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FeatureSpec:
    """How a layer's input becomes matrix rows: the activation's name, the op and its
    attributes, and the group count."""

    name: str
    activation: str
    op_type: str
    kernel: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    groups: int = 1
    trans_a: bool = False

    @classmethod
    def of(cls, layer: Layer) -> FeatureSpec | None:
        """The spec of ``layer``; None when its inputs cannot be turned into rows here
        (ConvTranspose, 3-D convolutions, an unnamed input)."""
        return cls.of_node(layer.name, layer.node, layer.kernel, layer.groups)

    @classmethod
    def of_node(cls, name: str, node: Node, kernel: tuple[int, ...], groups: int) -> FeatureSpec | None:
        act = node.input(0)
        if act is None:
            return None
        op = node.op_type
        if op == "Conv":
            if len(kernel) not in (1, 2):
                return None
            n = len(kernel)
            strides = tuple(node.attr("strides", None) or [1] * n)
            dil = tuple(node.attr("dilations", None) or [1] * n)
            pads = tuple(node.attr("pads", None) or [0] * (2 * n))
            auto = node.attr("auto_pad", "NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else str(auto)
            return cls(name, act.name, op, kernel, strides, pads, dil, auto, groups)
        if op in ("Gemm", "MatMul"):
            return cls(name, act.name, op, (), trans_a=op == "Gemm" and bool(node.attr("transA", 0)))
        return None


@dataclass
class InputStats:
    """The statistics of one layer's inputs (module docstring)."""

    gram: np.ndarray
    cross: np.ndarray | None
    rows: int

    @property
    def features(self) -> int:
        return int(self.gram.shape[-1]) - 1

    def norms(self) -> np.ndarray:
        """``‖x_j‖`` per group and input feature (bias column left out), ``[groups, d]``."""
        d = np.diagonal(self.gram, axis1=1, axis2=2)[:, :-1]
        return np.sqrt(np.maximum(d, 0.0))


def plan_groups(layers: Sequence[Layer], sequential: bool, memory_bytes: int) -> list[list[Layer]]:
    """Batches of layers whose statistics are collected together: layers at the same depth
    (none feeds another) when ``sequential``, any otherwise; each batch's statistics within
    ``memory_bytes`` (a layer larger than that goes alone)."""
    out: list[list[Layer]] = []
    current: list[Layer] = []
    used = 0
    depth = None
    for layer in sorted(layers, key=lambda la: la.depth) if sequential else layers:
        size = _stats_bytes(layer, cross=sequential)
        if current and ((sequential and layer.depth != depth) or used + size > memory_bytes):
            out.append(current)
            current, used = [], 0
        current.append(layer)
        used += size
        depth = layer.depth
    if current:
        out.append(current)
    return out


def _stats_bytes(layer: Layer, cross: bool) -> int:
    d = layer.features + 1
    return layer.groups * d * d * 8 * (2 if cross else 1)


class StatsCollector:
    """Runs models over calibration samples and reduces layer inputs (module docstring)."""

    def __init__(
        self,
        samples: Sequence[Feed],
        *,
        padding_mask: str | None = None,
        max_rows: int = 8192,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.padding_mask = padding_mask
        self.max_rows = max_rows
        self.seed = seed
        self.runs = 0

    def collect(
        self,
        model: onnx.ModelProto,
        specs: Sequence[FeatureSpec],
        original: onnx.ModelProto | None = None,
        original_specs: Sequence[FeatureSpec] | None = None,
    ) -> dict[str, InputStats]:
        """Statistics of ``specs``' inputs in ``model``, by spec name; with ``original``, also
        the cross products against the same layers' inputs there (``original_specs``, default
        ``specs``)."""
        if not specs:
            return {}
        o_specs = list(original_specs or specs)
        sess, taps = _tapped_session(model, [s.activation for s in specs])
        o_sess: object | None = None
        o_taps: dict[str, str] = {}
        if original is not None:
            o_sess, o_taps = _tapped_session(original, [s.activation for s in o_specs])
        acc: dict[str, InputStats] = {}
        per_batch = max(1, math.ceil(self.max_rows / max(1, len(self.samples))))
        for b, feed in enumerate(self.samples):
            acts = _run(sess, taps, [s.activation for s in specs], feed)
            o_acts = _run(o_sess, o_taps, [s.activation for s in o_specs], feed) if o_sess is not None else None
            self.runs += 1
            mask = _mask(feed, self.padding_mask)
            for k, spec in enumerate(specs):
                rng = np.random.default_rng((self.seed, b, k))
                x = _rows(spec, acts[k], mask, per_batch, rng)
                if x is None:
                    continue
                x0 = None
                if o_acts is not None:
                    x0 = _rows(o_specs[k], o_acts[k], mask, per_batch, np.random.default_rng((self.seed, b, k)))
                _accumulate(acc, spec.name, x, x0)
        return acc


def _tapped_session(model: onnx.ModelProto, names: Sequence[str]) -> tuple[object, dict[str, str]]:
    graph_inputs = {i.name for i in model.graph.input}
    wanted = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    tapped, taps = tapped_model(model, wanted) if wanted else (model, {})
    return OrtRunner().session(tapped), taps


def _run(sess: object, taps: Mapping[str, str], names: Sequence[str], feed: Feed) -> list[np.ndarray]:
    unique = [n for n in dict.fromkeys(names) if n in taps]
    outs = dict(zip(unique, sess.run([taps[n] for n in unique], dict(feed)))) if unique else {}  # type: ignore[attr-defined]
    result = []
    for n in names:
        if n in outs:
            result.append(np.asarray(outs[n]))
        elif n in feed:
            result.append(np.asarray(feed[n]))
        else:
            raise KeyError(f"activation {n!r} is neither computed nor fed")
    return result


def _mask(feed: Feed, name: str | None) -> np.ndarray | None:
    if name is None or name not in feed:
        return None
    return np.asarray(feed[name]) != 0


def _accumulate(acc: dict[str, InputStats], name: str, x: np.ndarray, x0: np.ndarray | None) -> None:
    """Add ``xᵀx`` (and ``xᵀx0``) of one batch, ``x``: ``[groups, rows, d + 1]``."""
    g = np.matmul(x.transpose(0, 2, 1), x).astype(np.float64)
    c = np.matmul(x.transpose(0, 2, 1), x0).astype(np.float64) if x0 is not None else None
    st = acc.get(name)
    if st is None:
        acc[name] = InputStats(g, c, int(x.shape[1]))
        return
    st.gram += g
    if st.cross is not None and c is not None:
        st.cross += c
    st.rows += int(x.shape[1])


def _rows(
    spec: FeatureSpec, x: np.ndarray, mask: np.ndarray | None, limit: int, rng: np.random.Generator
) -> np.ndarray | None:
    """``[groups, rows, d + 1]`` float32 matrix rows (ones last) from one batch's input."""
    x = np.asarray(x, np.float32)
    if spec.op_type == "Conv":
        rows = _conv_rows(spec, x, limit, rng)
    else:
        if spec.trans_a:
            x = x.T
        if mask is not None and x.ndim > mask.ndim and x.shape[: mask.ndim] == mask.shape:
            x = x[mask]
        x = x.reshape(-1, x.shape[-1])
        if x.shape[0] > limit:
            x = x[np.sort(rng.choice(x.shape[0], limit, replace=False))]
        rows = x[None]
    if rows is None or rows.shape[1] == 0:
        return None
    ones = np.ones((*rows.shape[:2], 1), np.float32)
    return np.concatenate([rows, ones], axis=2)


def conv_output_size(size: int, k: int, stride: int, dil: int, begin: int, end: int) -> int:
    return (size + begin + end - ((k - 1) * dil + 1)) // stride + 1


def _conv_pads(spec: FeatureSpec, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
    n = len(spatial)
    if spec.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(n):
            o = math.ceil(spatial[i] / spec.strides[i])
            total = max(0, (o - 1) * spec.strides[i] + (spec.kernel[i] - 1) * spec.dilations[i] + 1 - spatial[i])
            small, big = total // 2, total - total // 2
            out.append((small, big) if spec.auto_pad == "SAME_UPPER" else (big, small))
        return out
    if spec.auto_pad == "VALID":
        return [(0, 0)] * n
    return [(spec.pads[i], spec.pads[i + n]) for i in range(n)]


def _conv_rows(spec: FeatureSpec, x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray | None:
    """im2col rows of a 1-D or 2-D convolution's input, ``[groups, rows, C/g * k]``, columns in
    (channel, kernel position) order like the weight's."""
    kernel, strides, dil = spec.kernel, spec.strides, spec.dilations
    pads = _conv_pads(spec, tuple(x.shape[2:]))
    if len(kernel) == 1:
        x = x[:, :, None, :]
        kernel, strides, dil = (1, kernel[0]), (1, strides[0]), (1, dil[0])
        pads = [(0, 0), pads[0]]
    if x.ndim != 4:
        return None
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    eh, ew = (kernel[0] - 1) * dil[0] + 1, (kernel[1] - 1) * dil[1] + 1
    if xp.shape[2] < eh or xp.shape[3] < ew:
        return None
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]
    oh, ow = win.shape[2], win.shape[3]
    total = n * oh * ow
    idx = np.arange(total) if total <= limit else np.sort(rng.choice(total, limit, replace=False))
    ni, rest = np.divmod(idx, oh * ow)
    hi, wi = np.divmod(rest, ow)
    patches = win[ni, :, hi, wi]  # [rows, C, kh, kw]
    g = spec.groups
    cg = c // g
    return np.ascontiguousarray(patches.reshape(len(idx), g, cg * kernel[0] * kernel[1]).transpose(1, 0, 2))


__all__ = ["FeatureSpec", "InputStats", "StatsCollector", "plan_groups"]
