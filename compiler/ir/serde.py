"""Conversion between ONNX protobufs and the IR in :mod:`onnxforge.ir.core`.

Import resolves every name to a :class:`Value` through a chain of scopes (subgraphs see the values
of enclosing graphs). Anything the IR does not model is kept as protobuf and written back as is.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from onnxforge.errors import ModelError
from onnxforge.ir.core import Graph, Model, Node, Value


def from_proto(proto: onnx.ModelProto) -> Model:
    """Build an IR :class:`Model` from a ModelProto. The proto is not modified.

    Raises :class:`ModelError` for structurally invalid graphs (undefined inputs, values defined
    twice).
    """
    model = Model(opset_imports={})
    shell = onnx.ModelProto()
    shell.CopyFrom(proto)  # cheap relative to tensors: we clear the graph right after
    shell.ClearField("graph")
    model.proto_shell = shell
    model.ir_version = proto.ir_version
    model.opset_imports = {("" if imp.domain == "ai.onnx" else imp.domain): imp.version for imp in proto.opset_import}
    names: set[str] = set()
    node_names: set[str] = set()
    model.graph = _import_graph(proto.graph, model, [], None, names, node_names)
    model.graph._set_model(model)
    model.register_names(names, node_names)
    model.reset_version()
    return model


def _lookup(name: str, local: dict[str, Value], scopes: list[dict[str, Value]]) -> Value | None:
    v = local.get(name)
    if v is not None:
        return v
    for scope in reversed(scopes):
        v = scope.get(name)
        if v is not None:
            return v
    return None


def _import_graph(
    gp: onnx.GraphProto,
    model: Model,
    scopes: list[dict[str, Value]],
    parent: Node | None,
    names: set[str],
    node_names: set[str],
) -> Graph:
    g = Graph(gp.name, model, parent)
    g.doc_string = gp.doc_string
    g.metadata_props = list(gp.metadata_props)
    where = f"graph {gp.name!r}" if gp.name else "the graph"
    local: dict[str, Value] = {}

    def define(name: str) -> Value:
        if name in local:
            raise ModelError(f"value {name!r} is defined more than once in {where}")
        v = Value(name)
        v.graph = g
        local[name] = v
        names.add(name)
        return v

    inputs = []
    for vi in gp.input:
        v = define(vi.name)
        _apply_info(v, vi)
        inputs.append(v)
    for t in gp.initializer:
        v = local.get(t.name)
        if v is None:
            v = define(t.name)
        elif v.const is not None:
            raise ModelError(f"initializer {t.name!r} is defined more than once in {where}")
        v.const = t
        g.initializers[t.name] = v
    for st in gp.sparse_initializer:
        name = st.values.name
        v = local.get(name) or define(name)
        v.sparse_const = st
        g.initializers[name] = v

    # Create every node output first so that graphs not in topological order still resolve.
    for np_ in gp.node:
        for out in np_.output:
            if out:
                define(out)

    for np_ in gp.node:
        ins: list[Value | None] = []
        for name in np_.input:
            if not name:
                ins.append(None)
                continue
            v = _lookup(name, local, scopes)
            if v is None:
                raise ModelError(
                    f"node {np_.name or np_.op_type!r} ({np_.op_type}) reads {name!r}, which is not defined in {where}"
                )
            ins.append(v)
        outs = [local[o] if o else None for o in np_.output]
        node = Node(np_.op_type, ins, outs, domain=np_.domain, name=np_.name)
        node.overload = np_.overload
        node.doc_string = np_.doc_string
        node.metadata_props = list(np_.metadata_props)
        node_names.add(np_.name)
        for a in np_.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                node.subgraphs[a.name] = _import_graph(a.g, model, [*scopes, local], node, names, node_names)
            elif a.type == onnx.AttributeProto.GRAPHS:
                node.subgraphs[a.name] = [
                    _import_graph(sg, model, [*scopes, local], node, names, node_names) for sg in a.graphs
                ]
            else:
                node.attributes[a.name] = a
        node.graph = g
        g._nodes[node] = None

    for vi in gp.value_info:
        v = local.get(vi.name)
        if v is not None and v.type is None and v not in g._input_set:
            _apply_info(v, vi)
        else:
            g.extra_value_info.append(vi)

    outputs = []
    for vi in gp.output:
        v = _lookup(vi.name, local, scopes)
        if v is None:
            raise ModelError(f"graph output {vi.name!r} is not defined in {where}")
        if v.graph is g and v not in g._input_set:
            _apply_info(v, vi)
        outputs.append((v, vi))
    g._inputs = inputs
    g._input_set = set(inputs)
    g._outputs = [v for v, _ in outputs]
    g._output_set = set(g._outputs)
    # Output entries whose value is defined elsewhere (input, outer scope) keep their own info.
    g.output_info = {i: vi for i, (v, vi) in enumerate(outputs)}
    g.quantization_annotation = list(gp.quantization_annotation)
    return g


def _apply_info(v: Value, vi: onnx.ValueInfoProto) -> None:
    if vi.HasField("type"):
        t = onnx.TypeProto()
        t.CopyFrom(vi.type)
        v.type = t
    v.doc_string = vi.doc_string
    v.metadata_props = list(vi.metadata_props)


def _value_info(v: Value, name: str | None = None) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto(name=name or v.name)
    if v.type is not None:
        vi.type.CopyFrom(v.type)
    elif v.const is not None:
        vi.type.tensor_type.elem_type = v.const.data_type
        vi.type.tensor_type.shape.SetInParent()
        for d in v.const.dims:
            vi.type.tensor_type.shape.dim.add().dim_value = d
    if v.doc_string:
        vi.doc_string = v.doc_string
    vi.metadata_props.extend(v.metadata_props)
    return vi


def to_proto(
    model: Model,
    *,
    value_info: bool | None = None,
    initializer: Callable[[Value], onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    """Export the IR as a ModelProto (graphs are emitted in topological order).

    Tensors that refer to external data keep their references; :mod:`onnxforge.modelio` rewrites
    them when saving. ``value_info`` (default: ``model.export_value_info``) decides whether the
    types of intermediate values are written. ``initializer`` maps each dense initializer value
    to the tensor written for it (e.g. a data-less stub for shape inference); the IR is not
    touched.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto_shell)
    proto.ir_version = model.ir_version
    del proto.opset_import[:]
    for dom, ver in model.opset_imports.items():
        proto.opset_import.add(domain=dom, version=ver)
    emit = model.export_value_info if value_info is None else value_info
    proto.graph.CopyFrom(_export_graph(model.graph, emit, initializer))
    return proto


def _export_graph(
    g: Graph, value_info: bool = True, initializer: Callable[[Value], onnx.TensorProto] | None = None
) -> onnx.GraphProto:
    """Export without touching the IR: nodes go out in topological order, names on copies."""
    gp = onnx.GraphProto(name=g.name, doc_string=g.doc_string)
    gp.metadata_props.extend(g.metadata_props)
    for v in g._inputs:
        gp.input.append(_value_info(v))
    output_info = g.output_info
    for i, v in enumerate(g._outputs):
        orig = output_info.get(i)
        if orig is not None and orig.name == v.name and (v.graph is not g or v in g._input_set):
            gp.output.append(orig)
        else:
            gp.output.append(_value_info(v))
    for name, v in g.initializers.items():
        if v.const is not None:
            gp.initializer.append(v.const if initializer is None else initializer(v))
            if v.const.name != name:
                gp.initializer[-1].name = name
        elif v.sparse_const is not None:
            gp.sparse_initializer.append(v.sparse_const)
    described = {v for v in g._inputs} | {v for v in g._outputs}
    value_infos: list[onnx.ValueInfoProto] = []
    for node in g.topological_order():
        np_ = gp.node.add()
        np_.op_type = node.op_type
        np_.domain = node.domain
        np_.name = node.name
        if node.overload:
            np_.overload = node.overload
        if node.doc_string:
            np_.doc_string = node.doc_string
        np_.metadata_props.extend(node.metadata_props)
        np_.input.extend(v.name if v is not None else "" for v in node._inputs)
        # Trailing omitted inputs are dropped, as the spec allows.
        while np_.input and not np_.input[-1]:
            np_.input.pop()
        np_.output.extend(v.name if v is not None else "" for v in node._outputs)
        for a in node.attributes.values():
            np_.attribute.append(a)
        for name, sg in node.subgraphs.items():
            if isinstance(sg, list):
                a = onnx.AttributeProto(name=name, type=onnx.AttributeProto.GRAPHS)
                for s in sg:
                    a.graphs.append(_export_graph(s, value_info, initializer))
            else:
                a = onnx.AttributeProto(name=name, type=onnx.AttributeProto.GRAPH)
                a.g.CopyFrom(_export_graph(sg, value_info, initializer))
            np_.attribute.append(a)
        for v in node._outputs:
            if value_info and v is not None and v.type is not None and v not in described:
                value_infos.append(_value_info(v))
    gp.value_info.extend(value_infos)
    gp.value_info.extend(g.extra_value_info)
    gp.quantization_annotation.extend(g.quantization_annotation)
    return gp
