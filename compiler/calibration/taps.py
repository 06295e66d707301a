"""Exposing tensors computed inside If branches as outputs of the main graph.

Calibration and error measurement read intermediate tensors by making them graph outputs of a
copy of the model. A tensor computed inside an If branch cannot be a main-graph output
directly: :func:`tapped_model` threads it out through every enclosing If. At each level the
branch that computes it gets it as an extra output, the other branch an extra output holding an
empty tensor of the same element type, and the If node an extra output that carries whichever
ran. On a run where the tensor's branch was not taken, its tap therefore holds zero elements:
readers must treat an empty array as "not computed on this input".

Tensors inside Loop and Scan bodies are not tapped (a body runs once per iteration; its values
would have to be stacked as scan outputs whose shapes may vary between iterations): they are
left out of the returned mapping. The input model is never modified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from onnxforge.ir.onnx_inference import infer_shapes
from onnxforge.ir.proto_walk import graph_protos

log = logging.getLogger(__name__)

_IF_DOMAINS = ("", "ai.onnx")


def tapped_model(model: onnx.ModelProto, names: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of ``model`` whose graph outputs carry ``names``, and for each name the output
    that carries it (the name itself for main-graph tensors).

    Main-graph tensors (inputs, initializers, node outputs) become outputs under their own
    names; tensors computed inside If branches (at any depth of If nesting) under a fresh
    name. Names that cannot be tapped (inside Loop/Scan bodies, or unknown) are missing from
    the mapping. The copy's outputs are exactly the tapped names, in request order.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = copy.graph
    main = (
        {vi.name for vi in g.input}
        | {t.name for t in g.initializer}
        | {o for n in g.node for o in n.output if o}
    )
    wanted = list(dict.fromkeys(names))
    nested = [n for n in wanted if n not in main]
    mapping = {n: n for n in wanted if n in main}
    types: dict[str, int] = {}
    if nested:
        namer = _Namer(_all_names(g))
        types = _elem_types(g)
        if any(n not in types for n in nested):
            types = {**_inferred_types(model), **types}
        nested = [n for n in nested if n in types]  # a tap needs its element type
        mapping.update(_expose(g, set(nested), namer, types))
        missing = [n for n in nested if n not in mapping]
        if missing:
            log.info(
                "%d tensor(s) inside Loop/Scan bodies or unknown cannot be tapped: %s",
                len(missing),
                ", ".join(missing[:5]),
            )
    known = {vi.name: vi for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    del g.output[:]
    for name in wanted:
        if name not in mapping:
            continue
        out = mapping[name]
        if name in known:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(known[name])
            vi.name = out
        elif out != name:  # a tap: the element type its branches were given
            vi = helper.make_tensor_value_info(out, types.get(name, TensorProto.FLOAT), None)
        else:
            vi = onnx.ValueInfoProto(name=out)  # onnxruntime infers it
        g.output.append(vi)
    return copy, {n: mapping[n] for n in wanted if n in mapping}


class _Namer:
    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _all_names(g: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for gp in graph_protos(g):
        names.update(vi.name for vi in [*gp.input, *gp.output])
        names.update(t.name for t in gp.initializer)
        names.update(o for n in gp.node for o in n.output if o)
    return names


def _elem_types(g: onnx.GraphProto) -> dict[str, int]:
    """Element types known from value_info/outputs anywhere in the model."""
    types: dict[str, int] = {}
    for gp in graph_protos(g):
        for vi in [*gp.value_info, *gp.output, *gp.input]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _inferred_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types from onnx's shape inference (empty when it cannot run)."""
    try:
        inferred = infer_shapes(model)
    except Exception as e:  # onnx raises several types; the taps then skip untyped tensors
        log.info("shape inference failed (%s): tensors of unknown type are not tapped", type(e).__name__)
        return {}
    return _elem_types(inferred.graph)


def _expose(g: onnx.GraphProto, wanted: set[str], namer: _Namer, types: dict[str, int]) -> dict[str, str]:
    """Name, in graph ``g``, of a tensor carrying each wanted tensor defined in ``g`` or in the
    branches of its If nodes (recursively); edits ``g`` in place."""
    local = {o for n in g.node for o in n.output if o} | {vi.name for vi in g.input}
    found = {t: t for t in wanted if t in local}
    rest = wanted - set(found)
    for node in list(g.node):
        if not rest:
            break
        if node.op_type != "If" or node.domain not in _IF_DOMAINS:
            continue
        branches = [
            a.g for a in node.attribute if a.HasField("g") and a.name in ("then_branch", "else_branch")
        ]
        if len(branches) != 2:
            continue
        inner = [_expose(b, rest, namer, types) for b in branches]
        carried = sorted(t for t in rest if any(t in m for m in inner))
        for t in carried:
            elem = types.get(t, TensorProto.FLOAT)
            for branch, m in zip(branches, inner):
                src = m.get(t)
                if src is None:
                    src = namer(f"{t}__untaken")
                    empty = helper.make_tensor(src + "_value", elem, [0], [])
                    branch.node.append(helper.make_node("Constant", [], [src], value=empty))
                elif any(o.name == src for o in branch.output):
                    alias = namer(f"{t}__alias")  # already an output: give its tap a name of its own
                    branch.node.append(helper.make_node("Identity", [src], [alias]))
                    src = alias
                branch.output.append(helper.make_tensor_value_info(src, elem, None))
            out = namer(f"{t}__tap")
            node.output.append(out)
            found[t] = out
        rest -= set(carried)
    return found
