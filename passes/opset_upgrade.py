"""Raise the default-domain opset where no operator's meaning changes.

Some fusions need a newer opset than the model was exported with: ``LayerNormalization`` exists
from opset 17, so a LayerNorm spelled out in an opset-13 model cannot be fused into it. For
targets that run a recent onnxruntime the opset import can be raised, provided every operator the
model uses means the same at the new version. This pass raises it only then: each version an op
went through between the model's opset and the target must be one that only widened the allowed
types or added an attribute whose default keeps the old behaviour (:data:`COMPATIBLE`). Models
older than opset 13 are left alone (13 moved ``axes`` of Squeeze/Unsqueeze/Split/ReduceSum from
attributes to inputs).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from onnxforge.ir import Model
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

#: (op, version) pairs that changed nothing for a model valid at the version before.
COMPATIBLE: frozenset[tuple[str, int]] = frozenset(
    [(op, 14) for op in ("Add", "Sub", "Mul", "Div", "Relu", "Identity", "CumSum")]
    + [("Reshape", 14)]  # allowzero, default 0 = the old behaviour
    + [(op, 14) for op in ("GRU", "LSTM", "RNN")]  # layout, default 0 = the old layout
    + [("Pow", 15), ("Shape", 15)]  # bfloat16; start/end default to the whole shape
    + [(op, 16) for op in ("LeakyRelu", "PRelu", "Where", "GreaterOrEqual", "LessOrEqual", "Identity")]
    + [(op, 16) for op in ("If", "Loop", "Scan")]  # optional types in bodies
    + [("ScatterElements", 16), ("ScatterND", 16)]  # reduction, default "none"
)


@functools.cache
def _versions(op: str) -> tuple[int, ...]:
    import onnx.defs

    return tuple(sorted(s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op and s.domain == ""))


def blocking_ops(model: Model, target: int) -> list[str]:
    """Ops (all graphs) whose meaning may change between the model's opset and ``target``."""
    old = model.opset("") or 1
    blockers: set[str] = set()
    for graph in model.graph.all_graphs():
        for node in graph:
            if not node.is_standard_domain() or node.op_type in blockers:
                continue
            changes = [v for v in _versions(node.op_type) if old < v <= target]
            if not _versions(node.op_type) or any((node.op_type, v) not in COMPATIBLE for v in changes):
                blockers.add(node.op_type)
    return sorted(blockers)


@dataclass(frozen=True)
class RaiseOpsetOptions(PassOptions):
    #: The default-domain opset to raise to.
    target: int = 17

    def validate(self) -> None:
        if not 14 <= self.target <= 17:
            raise ValueError(f"target must be between 14 and 17, got {self.target}")


class RaiseOpset(Pass):
    """Raises the default-domain opset (13..16 → ``target``) when no operator's meaning changes."""

    name = "raise-opset"
    summary = "Raise the opset (13..16 -> 17) when no operator's meaning changes, so newer fusions apply."
    Options = RaiseOpsetOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, RaiseOpsetOptions)
        old = model.opset("") or 1
        if old < 13 or old >= opts.target:
            return PassResult(False)
        blockers = blocking_ops(model, opts.target)
        if blockers:
            log.info("raise-opset: kept opset %d (%s change meaning by %d)", old, ", ".join(blockers), opts.target)
            return PassResult(False, {"blocked_by": len(blockers)})
        model.opset_imports[""] = opts.target
        model.ir_version = max(model.ir_version, 8)
        model.version += 1
        return PassResult(True, {"from": old, "to": opts.target})
