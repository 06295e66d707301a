"""Shape inference: refresh the types of intermediate values after rewriting."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxforge.ir import Model, Node, Value, to_proto
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.tensor_data import is_external
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

_STRIPPED_LOCATION = "onnxforge-shape-inference-stripped-data"


@dataclass(frozen=True)
class ShapeInferenceOptions(PassOptions):
    #: Initializers larger than this are exported to onnx's shape inference without their data
    #: (their dtype and shape are all it needs; small ones keep data for data propagation).
    max_data_bytes: int = 1024

    def validate(self) -> None:
        if self.max_data_bytes < 0:
            raise ValueError("max_data_bytes must be >= 0")


def _reinferable(node: Node, functions: set[tuple[str, str]]) -> bool:
    """True when onnx knows the op's schema, so that its outputs' types can be recomputed."""
    if (node.domain, node.op_type) in functions:
        return False
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        return bool(onnx.defs.has(node.op_type, domain))
    except Exception:
        return False


def _same_type(a: onnx.TypeProto | None, b: onnx.TypeProto | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def merge_types(inferred: onnx.TypeProto | None, old: onnx.TypeProto | None) -> onnx.TypeProto | None:
    """The inferred type, completed with the old one's details where the two agree (same tensor
    element type and rank) and inference knows less (no shape, unknown or generated ``unk__``
    dims). Conflicts go to the inferred type; no inferred type gives None."""
    if inferred is None or old is None:
        return inferred
    if not (inferred.HasField("tensor_type") and old.HasField("tensor_type")):
        return inferred
    it, ot = inferred.tensor_type, old.tensor_type
    if not it.elem_type or it.elem_type != ot.elem_type or not ot.HasField("shape"):
        return inferred
    result = onnx.TypeProto()
    result.CopyFrom(inferred)
    if not it.HasField("shape"):
        result.tensor_type.shape.CopyFrom(ot.shape)
        return result
    if len(it.shape.dim) != len(ot.shape.dim):
        return inferred
    for rd, od in zip(result.tensor_type.shape.dim, ot.shape.dim):
        if rd.HasField("dim_value"):
            continue
        if rd.HasField("dim_param") and not rd.dim_param.startswith("unk__"):
            continue
        if (od.HasField("dim_value") and od.dim_value >= 0) or od.HasField("dim_param"):
            rd.CopyFrom(od)  # (some exporters write -1 for "unknown": never copy that)
    return result


class ShapeInference(Pass):
    """Recomputes the types of intermediate values with onnx's shape inference (data
    propagation on, non-strict, custom ops skipped).

    Design: the types of outputs of ops onnx knows are left out of the model handed to onnx, so
    that every such type is recomputed rather than trusted; the result is completed with the old
    type where the two agree and inference knows less (:func:`merge_types`). Outputs of custom
    ops and model-local functions keep their types (and feed inference downstream). Values
    inference cannot type end up without a type. Graph inputs and outputs (of every graph) are
    never touched. If onnx raises, a warning is logged and nothing changes.

    Large initializers are exported without their data: their ``const`` is swapped for a
    data-less stub while :func:`onnxforge.ir.to_proto` runs and restored right after, so no
    tensor of the IR is copied or modified.
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
                recompute = _reinferable(node, functions)
                for v in node.outputs:
                    if v is not None and not v.is_graph_output():
                        candidates.append((v, recompute))
        try:
            inferred = infer_types(model, max_data_bytes=opts.max_data_bytes)
        except Exception as e:
            log.warning("shape inference failed; value types left as they were: %s", e)
            # to_proto sorts graphs that were out of order: that alone is a modification.
            return PassResult(modified=model.version != start_version, stats={"failed": 1})
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


def export_for_inference(model: Model, max_data_bytes: int = 1024) -> onnx.ModelProto:
    """The model as a proto for onnx's shape inference, initializers larger than
    ``max_data_bytes`` replaced by data-less stubs (dtype and shape kept). The IR is unchanged:
    the stubs exist only in the exported proto."""

    def stubbed(v: Value) -> onnx.TensorProto:
        t = v.const
        assert t is not None
        if is_external(t) or v.const_nbytes() <= max_data_bytes:
            return t
        stub = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=_STRIPPED_LOCATION)
        return stub

    return to_proto(model, value_info=True, initializer=stubbed)


def infer_types(
    model: Model,
    *,
    max_data_bytes: int = 1024,
    input_types: dict[str, onnx.TypeProto] | None = None,
    value_types: dict[str, onnx.TypeProto] | None = None,
    known_values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, onnx.TypeProto]:
    """Types that onnx's shape inference (data propagation on, non-strict) gives the values of
    every graph, by name, without modifying ``model``.

    The stored types of outputs of ops onnx knows are dropped before inference so that they are
    recomputed, not trusted. ``input_types`` replaces the declared types of main-graph inputs
    (to analyse the model at fixed input shapes); ``value_types`` are trusted types of
    values of any graph (e.g. measured ones) given to inference as value_info. Raises whatever
    onnx raises. ``known_values`` are computed data of main-graph values (shape computations):
    their consumers read them as initializers, so that data-dependent shapes resolve.
    """
    functions = model.function_keys()
    recomputed = {
        v.name
        for graph in model.graph.all_graphs()
        for node in graph
        if _reinferable(node, functions)
        for v in node.outputs
        if v is not None and not v.is_graph_output()
    }
    proto = export_for_inference(model, max_data_bytes)
    for gp in graph_protos(proto.graph):
        kept = [vi for vi in gp.value_info if vi.name not in recomputed]
        del gp.value_info[:]
        gp.value_info.extend(kept)
    if input_types:
        for vi in proto.graph.input:
            if vi.name in input_types:
                vi.type.CopyFrom(input_types[vi.name])
        # Declared output shapes (often symbolic) would shadow what the fixed inputs give.
        produced = {v.name for node in model.graph for v in node.outputs if v is not None and _reinferable(node, functions)}
        for vi in proto.graph.output:
            if vi.name in produced and vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
    if value_types:
        for gp in graph_protos(proto.graph):
            declared = {vi.name for vi in [*gp.input, *gp.output]}
            for n in gp.node:
                for name in n.output:
                    if name in value_types and name not in declared:
                        gp.value_info.add(name=name).type.CopyFrom(value_types[name])
    if known_values:
        _substitute_known(proto, known_values)
    result = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    inferred: dict[str, onnx.TypeProto] = {}
    for gp in graph_protos(result.graph):
        for vi in [*gp.input, *gp.output, *gp.value_info]:
            if vi.HasField("type"):
                inferred[vi.name] = vi.type
    return inferred


_KNOWN_SUFFIX = "__onnxforge_known"


def _substitute_known(proto: onnx.ModelProto, known: Mapping[str, np.ndarray]) -> None:
    """Point every consumer of a known value at an initializer holding its data."""
    used: set[str] = set()
    for gp in graph_protos(proto.graph):
        for n in gp.node:
            for i, name in enumerate(n.input):
                if name in known:
                    n.input[i] = name + _KNOWN_SUFFIX
                    used.add(name)
    for name in used:
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(known[name]), name + _KNOWN_SUFFIX))
