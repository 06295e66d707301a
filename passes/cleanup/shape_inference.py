"""Shape inference: refresh the types of intermediate values after rewriting."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

from onnxforge.analysis.shapes import InferredTypes, merge_types, reinferable
from onnxforge.ir import Model, Value
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ShapeInferenceOptions(PassOptions):
    #: Initializers larger than this are exported to onnx's shape inference without their data
    #: (their dtype and shape are all it needs; small ones keep data for data propagation).
    max_data_bytes: int = 1024

    def validate(self) -> None:
        if self.max_data_bytes < 0:
            raise ValueError("max_data_bytes must be >= 0")


def _same_type(a: onnx.TypeProto | None, b: onnx.TypeProto | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


class ShapeInference(Pass):
    """Recomputes the types of intermediate values with onnx's shape inference (data
    propagation on, non-strict, custom ops skipped).

    Design: the types of outputs of ops onnx knows are left out of the model handed to onnx, so
    that every such type is recomputed rather than trusted; the result is completed with the old
    type where the two agree and inference knows less (:func:`merge_types`). Outputs of custom
    ops and model-local functions keep their types (and feed inference downstream). Values
    inference cannot type end up without a type. Graph inputs and outputs (of every graph) are
    never touched. If onnx raises, a warning is logged and nothing changes.

    Large initializers are exported without their data (data-less stubs in the exported proto
    only), so no tensor of the IR is copied or modified. The engine is the shared shape analysis
    (:mod:`onnxforge.analysis.shapes`).
    """

    name = "shape-inference"
    summary = "Refresh intermediate value types with onnx shape inference (data propagation on)."
    lossless = True
    Options = ShapeInferenceOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, ShapeInferenceOptions)
        start_version = model.version
        functions = model.function_keys()
        candidates: list[tuple[Value, bool]] = []
        for graph in model.graph.all_graphs():
            for node in graph:
                recompute = reinferable(node, functions)
                for v in node.outputs:
                    if v is not None and not v.is_graph_output():
                        candidates.append((v, recompute))
        found = ctx.analyses.get(InferredTypes(opts.max_data_bytes), model)
        if found.error is not None:
            log.warning("shape inference failed; value types left as they were: %s", found.error)
            # to_proto sorts graphs that were out of order: that alone is a modification.
            return PassResult(modified=model.version != start_version, stats={"failed": 1})
        inferred = found.types
        updated = untyped = 0
        for v, recompute in candidates:
            new = inferred.get(v.name)
            new = merge_types(new, v.type) if recompute else (new if new is not None else v.type)
            if new is None:
                untyped += 1
            if _same_type(new, v.type):
                continue
            if new is not None:
                copy = onnx.TypeProto()
                copy.CopyFrom(new)
                new = copy
            v.type = new
            updated += 1
        return PassResult(
            modified=model.version != start_version,
            stats={"updated_types": updated, "untyped_values": untyped},
        )
