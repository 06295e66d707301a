"""Activation smoothing before int8 quantization (SmoothQuant, Xiao et al. 2023).

Transformer activations have a few channels with outliers 10–100× larger than the rest; one
int8 scale per tensor then leaves the other channels with a handful of levels. For
``Y = X @ W`` with a constant ``W``, ``Y = (X / s) @ (diag(s) W)`` exactly, for any per-channel
``s``. Choosing ``s_j = max|X_j|^α / max|W_j|^(1-α)`` moves part of the outliers' range into
the weights, which are quantized per output channel and absorb it well.

Here the division is an explicit ``Mul(X, 1/s)`` in front of the MatMuls (X usually also
feeds a residual path, so it cannot be folded into the producer), shared by every MatMul/Gemm
that reads the same X; their weights are replaced by scaled copies. ``max|X_j|`` comes from the
calibration samples. Weights read by other nodes are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from onnxforge.calibration.collect import exposed_model
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import Model, Node, Value, to_proto
from onnxforge.ir.constants import add_constant, constant_value

log = logging.getLogger(__name__)

_FLOAT = 1
_CLIP = (1e-2, 1e2)


def _weight(node: Node, ops: tuple[str, ...]) -> tuple[np.ndarray, int] | None:
    """(constant 2-D float32 weight, its input-channel axis) of a smoothable MatMul/Gemm."""
    if not node.is_standard_domain() or node.op_type not in ops:
        return None
    if node.op_type == "Gemm" and int(node.attr("transA", 0)):
        return None
    w_v = node.input(1)
    try:
        w = constant_value(w_v)
    except ValueError:
        return None
    if w is None or w.ndim != 2 or w.dtype != np.float32 or w_v is None:
        return None
    if any(u is not node for u in w_v.consumers()) or w_v.is_graph_output():
        return None
    axis = 1 if node.op_type == "Gemm" and int(node.attr("transB", 0)) else 0
    return w, axis


def smooth_activations(
    model: Model, samples: Sequence[Mapping[str, np.ndarray]], alpha: float = 0.7, ops: tuple[str, ...] = ("MatMul",)
) -> int:
    """Insert smoothing Muls in front of the main graph's ``ops`` (MatMul by default: the
    transformer projections; CNN classifier Gemms gain nothing) with constant weights; returns
    how many activations were smoothed. The model computes the same function."""
    if not samples or not 0.0 < alpha < 1.0:
        return 0
    graph = model.graph
    groups: dict[Value, list[tuple[Node, np.ndarray, int]]] = {}
    for node in graph.topological_order():
        x = node.input(0)
        got = _weight(node, ops)
        if got is None or x is None or x.elem_type() != _FLOAT or x.is_graph_input():
            continue
        groups.setdefault(x, []).append((node, *got))
    if not groups:
        return 0
    names = [x.name for x in groups]
    runner = OrtRunner()
    sess = runner.session(exposed_model(to_proto(model, value_info=True), names))
    amax: dict[str, np.ndarray] = {}
    for feed in samples:
        for name, arr in zip(names, sess.run(names, dict(feed))):
            a = np.asarray(arr, dtype=np.float32)
            m = np.abs(a.reshape(-1, a.shape[-1])).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
    smoothed = 0
    for x, nodes in groups.items():
        act = amax.get(x.name)
        if act is None or any(w.shape[axis] != act.shape[0] for _, w, axis in nodes):
            continue
        wmax = np.max([np.abs(w).max(axis=1 - axis) for _, w, axis in nodes], axis=0)
        s = np.maximum(act, 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)
        s = np.clip(s, *_CLIP).astype(np.float32)
        inv = add_constant(graph, (1.0 / s).astype(np.float32), f"{x.name}_smooth_scale")
        mul = graph.add_node("Mul", [x, inv], name=f"{x.name}_smooth", provenance="smooth-activations")
        out = mul.output(0)
        assert out is not None
        out.type = x.type
        for node, w, axis in nodes:
            scaled = w * (s[:, None] if axis == 0 else s[None, :])
            node.set_input(1, add_constant(graph, scaled.astype(np.float32), f"{node.name or 'matmul'}_smoothed_weight"))
            node.set_input(0, out)
        smoothed += 1
    graph.toposort()
    log.info("smoothed %d activations (alpha %.2f)", smoothed, alpha)
    return smoothed
