"""A constant-mode Pad in front of a Conv or pooling op folded into the op's own ``pads``.

Allowed when only spatial axes are padded (batch and channel pads are 0), pads are
non-negative constants, and the padding value is what the consumer's implicit padding uses:
0 for Conv and for AveragePool (which then counts the pads: ``count_include_pad=1``, only when
the pool had no pads of its own), ``-inf`` for MaxPool. ``auto_pad`` must be ``NOTSET``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxforge.ir import Node
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule


def _pad_amounts(pad: Node, rc: RewriteContext) -> tuple[list[int], float]:
    """(pads as [begin..., end...], constant value)."""
    mode = pad.attr("mode", "constant")
    if mode != "constant":
        raise MatchFailed(f"Pad mode is {mode!r}")
    if rc.opset < 11:
        pads = [int(p) for p in pad.attr("pads", [])]
        value = float(pad.attr("value", 0.0))
    else:
        pads = [int(p) for p in rc.require_const(pad.input(1), "Pad pads").reshape(-1)]
        cv = pad.input(2)
        value = 0.0
        if cv is not None and cv.name:
            arr = rc.require_const(cv, "Pad value")
            if arr.size != 1:
                raise MatchFailed("Pad value is not a scalar")
            value = float(arr.reshape(-1)[0])
        if pad.input(3) is not None:
            raise MatchFailed("Pad with explicit axes")
    if any(p < 0 for p in pads):
        raise MatchFailed("Pad crops (negative pads)")
    return pads, value


@dataclass
class PadIntoConvPoolMatch(Match):
    pad: Node
    #: The consumer's new ``pads``.
    pads: list[int]


class FusePadIntoConvPool(Rule[PadIntoConvPoolMatch]):
    """Pad → Conv / AveragePool / MaxPool → the op with larger ``pads``."""

    name = "pad-into-conv-pool"
    summary = "Fold a constant Pad before Conv/AveragePool/MaxPool into the op's pads."
    anchors: ClassVar[tuple[str, ...]] = ("Conv", "AveragePool", "MaxPool")

    def match(self, node: Node, rc: RewriteContext) -> PadIntoConvPoolMatch:
        pad = rc.producer(node.input(0), "Pad", f"{node.op_type} input")
        rc.single_consumer(pad.output(0), "Pad output")
        if node.attr("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise MatchFailed(f"{node.op_type} uses auto_pad")
        pads, value = _pad_amounts(pad, rc)
        rank = len(pads) // 2
        if rank < 3:
            raise MatchFailed("Pad is not over an N, C, spatial... tensor")
        begin, end = pads[:rank], pads[rank:]
        if begin[0] or begin[1] or end[0] or end[1]:
            raise MatchFailed("Pad pads the batch or channel axis")
        spatial = rank - 2
        own = [int(p) for p in node.attr("pads", [0] * (2 * spatial))]
        if node.op_type == "Conv" and value != 0.0:
            raise MatchFailed(f"Pad value {value} is not 0")
        if node.op_type == "AveragePool":
            if value != 0.0:
                raise MatchFailed(f"Pad value {value} is not 0")
            if any(own) and not int(node.attr("count_include_pad", 0)):
                raise MatchFailed("AveragePool has pads of its own that it does not count")
        if node.op_type == "MaxPool":
            if not (math.isinf(value) and value < 0):
                raise MatchFailed(f"Pad value {value} is not -inf")
            if node.output(1) is not None:
                raise MatchFailed("MaxPool returns indices")
        new = [own[i] + begin[2 + i] for i in range(spatial)] + [own[spatial + i] + end[2 + i] for i in range(spatial)]
        return PadIntoConvPoolMatch(node, [pad, node], pad, new)

    def rewrite(self, m: PadIntoConvPoolMatch, rb: RewriteBuilder) -> Replacement:
        node = m.anchor
        attrs = {k: node.attr(k) for k in node.attributes}
        attrs["pads"] = [int(p) for p in np.asarray(m.pads)]
        if node.op_type == "AveragePool":
            attrs["count_include_pad"] = 1
        fused = rb.op(node.op_type, [m.pad.input(0), *node.inputs[1:]], attrs=attrs, name=node.name)
        return Replacement.outputs(node, fused)
