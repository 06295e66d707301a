"""Walking a model proto: its graphs (subgraphs included), nodes, tensors, value infos and
names, and every set field by descriptor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx
from google.protobuf.descriptor import FieldDescriptor


def _graphs(m: onnx.ModelProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []

    def walk(g: onnx.GraphProto) -> None:
        out.append(g)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    if m.HasField("graph"):
        walk(m.graph)
    return out


def _node_lists(m: onnx.ModelProto) -> list[Any]:
    """The repeated ``node`` fields of every graph and function."""
    return [g.node for g in _graphs(m)] + [f.node for f in m.functions]


def _nodes(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for nodes in _node_lists(m) for n in nodes]


def _tensors(m: onnx.ModelProto) -> list[onnx.TensorProto]:
    out: list[onnx.TensorProto] = []
    for g in _graphs(m):
        out.extend(g.initializer)
    for n in _nodes(m):
        for a in n.attribute:
            if a.HasField("t"):
                out.append(a.t)
    return out


def _value_infos(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [v for g in _graphs(m) for v in (*g.input, *g.output, *g.value_info)]


def _names(m: onnx.ModelProto) -> list[str]:
    names = {x for n in _nodes(m) for x in (*n.input, *n.output) if x}
    names |= {v.name for v in _value_infos(m)} | {t.name for t in _tensors(m) if t.name}
    return sorted(names)


Path_ = tuple[tuple[str, "int | None"], ...]


def _field_paths(msg: Any, path: Path_, depth: int = 0) -> Iterator[tuple[Path_, str]]:
    """(message path, field name) of every set field, recursing into messages."""
    if depth > 40:
        return
    for fd, value in msg.ListFields():
        yield path, fd.name
        if fd.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            continue
        if _is_repeated(fd):
            for i, sub in enumerate(value):
                yield from _field_paths(sub, (*path, (fd.name, i)), depth + 1)
        else:
            yield from _field_paths(value, (*path, (fd.name, None)), depth + 1)


def _is_repeated(fd: FieldDescriptor) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def _resolve(msg: Any, path: Path_) -> Any:
    for name, index in path:
        msg = getattr(msg, name)
        if index is not None:
            msg = msg[index]
    return msg
