"""Raise the default-domain opset where no operator's meaning changes.

Some fusions need a newer opset than the model was exported with: ``LayerNormalization`` exists
from opset 17, so a LayerNorm spelled out in an opset-13 model cannot be fused into it. For
targets that run a recent onnxruntime the opset import can be raised, provided every operator the
model uses means the same at the new version. This pass raises it only then: each version an op
went through between the model's opset and the target must be one that only widened the allowed
types or added an attribute whose default keeps the old behaviour (:data:`COMPATIBLE`). Models
older than opset 13 are left alone (13 moved ``axes`` of Squeeze/Unsqueeze/Split/ReduceSum from
attributes to inputs).

Where an operator does change meaning, :func:`raise_opset` converts with onnx's version
converter and accepts the result only if it passes the checker and reproduces the original's
outputs on real samples (int8 needs opset 13 for per-channel weights; onnxruntime's quantizer
upgrades without that check and collapses some models: PP-OCRv4 det, output cosine 0.10).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxforge.equivalence import OrtRunner
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.ir.proto_walk import graph_protos, subgraphs
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



def _inference_batchnorm(outputs: int, training_mode: int) -> bool:
    return outputs == 1 and training_mode == 0


#: (op, version) pairs that are compatible only for some uses: BatchNormalization-14 added
#: training_mode (default 0) and redefined the optional training outputs, -15 only widened
#: types; an inference node with one output computes the same.
COMPATIBLE_IF = {("BatchNormalization", 14): _inference_batchnorm, ("BatchNormalization", 15): _inference_batchnorm}


@functools.cache
def _versions() -> dict[str, tuple[int, ...]]:
    """Every default-domain op's versions, from onnx's schema history (read once)."""
    import onnx.defs

    out: dict[str, list[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain == "":
            out.setdefault(schema.name, []).append(schema.since_version)
    return {op: tuple(sorted(v)) for op, v in out.items()}


def _uses(model: Model) -> Iterator[tuple[str, int, int]]:
    """(op, outputs, training_mode) of every default-domain node: in every graph, and in the
    bodies of model-local functions (which must import the model's opset) and their subgraphs."""
    for graph in model.graph.all_graphs():
        for node in graph:
            if node.is_standard_domain():
                yield node.op_type, sum(1 for o in node.outputs if o is not None), int(node.attr("training_mode", 0))
    for fn in model.functions:
        bodies = [fn.node, *(g.node for n in fn.node for sub in subgraphs(n) for g in graph_protos(sub))]
        for nodes in bodies:
            for pnode in nodes:
                if pnode.domain in ("", "ai.onnx"):
                    training = next((a.i for a in pnode.attribute if a.name == "training_mode"), 0)
                    yield pnode.op_type, sum(1 for o in pnode.output if o), training


def blocking_ops(model: Model, target: int) -> list[str]:
    """Ops whose meaning may change between the model's opset and ``target``."""
    old = model.opset("") or 1
    blockers: set[str] = set()
    for op, outputs, training in _uses(model):
        versions = _versions().get(op)
        if not versions or not all(_compatible(op, v, outputs, training) for v in versions if old < v <= target):
            blockers.add(op)
    return sorted(blockers)


def _compatible(op: str, version: int, outputs: int, training_mode: int) -> bool:
    condition = COMPATIBLE_IF.get((op, version))
    return (op, version) in COMPATIBLE or (condition is not None and condition(outputs, training_mode))


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
    lossless = True
    Options = RaiseOpsetOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, RaiseOpsetOptions)
        old = model.opset("") or 1
        if old < 13 or old >= opts.target:
            return PassResult(False)
        if len(model.proto_shell.training_info):
            return PassResult(False)  # training graphs are kept verbatim; not worth the risk
        blockers = blocking_ops(model, opts.target)
        if blockers:
            log.info("raise-opset: kept opset %d (%s change meaning by %d)", old, ", ".join(blockers), opts.target)
            return PassResult(False, {"blocked_by": len(blockers)})
        model.opset_imports[""] = opts.target
        # Model-local functions must import the same default-domain opset as the model.
        with model.edit_shell() as shell:
            for fn in shell.functions:
                for imp in fn.opset_import:
                    if imp.domain in ("", "ai.onnx") and imp.version < opts.target:
                        imp.version = opts.target
        model.ir_version = max(model.ir_version, 8)
        return PassResult(True, {"from": old, "to": opts.target})


def max_relative_error(ref: Mapping[str, Any], got: Mapping[str, Any]) -> float:
    """Largest ``|a - b| / max|a|`` over the outputs, by name (inf when names or shapes differ)."""
    worst = 0.0
    for name, a in ref.items():
        if name not in got:
            return float("inf")
        a64 = np.asarray(a, dtype=np.float64)
        b64 = np.asarray(got[name], dtype=np.float64)
        if a64.shape != b64.shape:
            return float("inf")
        if a64.size:
            scale = max(float(np.abs(a64).max()), 1e-12)
            worst = max(worst, float(np.abs(a64 - b64).max()) / scale)
    return worst


def raise_opset(model: Model, target: int, samples: Iterable[Mapping[str, np.ndarray]], *, tolerance: float = 1e-4) -> tuple[Model | None, str]:
    """A copy of ``model`` at default-domain opset ``target`` (or ``model`` itself when it is
    already there), checked on ``samples``; ``(None, reason)`` when the conversion fails or
    changes the outputs."""
    current = model.opset("") or 1
    if current >= target:
        return model, f"opset {current} already >= {target}"
    if current >= 13 and not blocking_ops(model, target) and 14 <= target <= 17:
        # No operator changes meaning: the same raise as the raise-opset pass, no conversion.
        raised = model.clone()
        RaiseOpset(target=target)(raised)
        return raised, f"opset raised from {current} to {target} (no operator changes meaning)"
    proto = to_proto(model, value_info=True)
    try:
        converted = onnx.version_converter.convert_version(proto, target)
        onnx.checker.check_model(converted)
    except Exception as e:
        return None, f"onnx's version converter failed: {str(e).splitlines()[0][:200]}"
    runner = OrtRunner()
    worst = 0.0
    checked = 0
    for feed in samples:
        try:
            ref = runner.run(proto, feed)
            got = runner.run(converted, feed)
        except Exception as e:
            return None, f"the converted model does not run: {str(e).splitlines()[0][:200]}"
        worst = max(worst, max_relative_error(ref, got))
        checked += 1
    if checked == 0:
        return None, "no samples to check the conversion on"
    if worst > tolerance:
        return None, f"conversion to opset {target} changes the outputs (relative error {worst:.2g})"
    log.info("raised the opset from %d to %d (checked on %d samples, error %.1e)", current, target, checked, worst)
    raised = from_proto(converted)
    raised.export_value_info = model.export_value_info
    raised.tensor_store = model.tensor_store
    return raised, f"opset raised from {current} to {target}"
