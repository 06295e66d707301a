"""Mutations of a model's graph: any field by descriptor, shapes, element types, attributes,
names, cycles, structure, versions and metadata; and the edge values they draw from.

Each takes ``(rng, model, parent)``, mutates the model in place and says what it did, or
raises :class:`NotApplicable`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import helper, numpy_helper

from onnxforge.fuzz.parents import Parent
from onnxforge.fuzz.protowalk import (
    _graphs,
    _is_repeated,
    _names,
    _node_lists,
    _nodes,
    _resolve,
    _tensors,
    _value_infos,
)
from onnxforge.runtime.choices import NCHWC_METADATA_KEY


class NotApplicable(Exception):
    """This mutation has nothing to act on in this model."""


INTS = (0, 1, -1, 2, 3, 7, 8, 16, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32, 2**40, 2**62, -(2**62), 2**63 - 1)
DIMS = (0, -1, -7, 1, 2, 3, 1000, 2**31, 2**40, 2**62)
FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, -1e30, float("nan"), float("inf"), float("-inf"))
OPS = ("Conv", "Relu", "Add", "MatMul", "Gemm", "Reshape", "Transpose", "Cast", "If", "Loop", "Scan", "Constant",
       "Identity", "Concat", "Split", "Slice", "Gather", "Softmax", "LayerNormalization", "BatchNormalization",
       "QuantizeLinear", "DequantizeLinear", "Attention", "NotAnOp", "")
DOMAINS = ("", "ai.onnx", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.ml", "local", "custom.domain")
ODD_NAMES = ("", "ghost", "x" * 300, "../../etc/passwd", "a/b", "é\u200bname", "name with space")


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    if not seq:
        raise NotApplicable("nothing to pick")
    return seq[int(rng.integers(len(seq)))]


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_for(rng: np.random.Generator, fd: FieldDescriptor, old: int) -> int:
    candidates = [*INTS, old + 1, old - 1, old * 2, -old]
    lo, hi = {
        FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
        FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
        FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
    }.get(fd.cpp_type, (-(2**63), 2**63 - 1))
    return min(max(int(_pick(rng, candidates)), lo), hi)


def _string_for(rng: np.random.Generator, m: onnx.ModelProto, name: str) -> str:
    if name == "op_type":
        return str(_pick(rng, OPS + tuple(sorted({n.op_type for n in _nodes(m)}))))  # sorted: mutants repeat
    if name == "domain":
        return str(_pick(rng, DOMAINS))
    if name == "key" or (name == "value" and rng.random() < 0.3):
        return str(_pick(rng, ("location", "offset", "length", "checksum", "onnxforge.nchwc_block_size", "8", "-1")))
    if rng.random() < 0.6:
        return str(_pick(rng, _names(m) or ["x"]))
    return str(_pick(rng, ODD_NAMES))


def mutate_field(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Any set field of the proto, by descriptor: ints to edge values, strings to other names,
    enums to other members, bytes cut or grown, messages cleared, repeated elements dropped,
    duplicated or swapped."""
    path, name = _pick(rng, parent.fields())
    msg = _resolve(m, path)
    fd = msg.DESCRIPTOR.fields_by_name[name]
    where = ".".join(f"{n}[{i}]" if i is not None else n for n, i in path) or "model"
    value = getattr(msg, name)
    if _is_repeated(fd):
        n = len(value)
        if n == 0:
            raise NotApplicable(name)
        action = _pick(rng, ("drop", "dup", "swap", "edit", "clear"))
        if action == "drop":
            del value[int(rng.integers(n))]
        elif action == "clear":
            msg.ClearField(name)
        elif action == "dup":
            i = int(rng.integers(n))
            if fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                value.add().CopyFrom(value[i])
            else:
                value.append(value[i])
        elif action == "swap" and n > 1:
            i, j = (int(x) for x in rng.choice(n, 2, replace=False))
            if fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                a, b = type(value[i])(), type(value[j])()
                a.CopyFrom(value[i])
                b.CopyFrom(value[j])
                value[i].CopyFrom(b)
                value[j].CopyFrom(a)
            else:
                value[i], value[j] = value[j], value[i]
        elif fd.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            i = int(rng.integers(n))
            value[i] = _scalar_for(rng, m, fd, value[i])
        else:
            raise NotApplicable(name)
        return f"field {where}.{name}: {action}"
    if fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        msg.ClearField(name)
        return f"field {where}.{name}: cleared"
    new = _scalar_for(rng, m, fd, value)
    setattr(msg, name, new)
    return f"field {where}.{name}: {_short(value)} -> {_short(new)}"


def _scalar_for(rng: np.random.Generator, m: onnx.ModelProto, fd: FieldDescriptor, old: Any) -> Any:
    ct = fd.cpp_type
    if ct in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT32,
              FieldDescriptor.CPPTYPE_UINT64):
        return _int_for(rng, fd, int(old))
    if ct in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return float(_pick(rng, FLOATS))
    if ct == FieldDescriptor.CPPTYPE_BOOL:
        return not old
    if ct == FieldDescriptor.CPPTYPE_ENUM:
        values = [v.number for v in fd.enum_type.values if v.number != old]
        return int(_pick(rng, values or [old]))
    if fd.type == FieldDescriptor.TYPE_BYTES:
        data = bytes(old)
        choice = int(rng.integers(4))
        if choice == 0:
            return data[: int(rng.integers(len(data) + 1))]
        if choice == 1:
            return data + rng.bytes(int(rng.integers(1, 64)))
        if choice == 2:
            return rng.bytes(len(data))
        return b""
    return _string_for(rng, m, fd.name)


def mutate_dims(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """A declared shape or a tensor's dims: edge values, one dim more or less, no shape at all."""
    if rng.random() < 0.5:
        vis = [v for v in _value_infos(m) if v.type.HasField("tensor_type")]
        v = _pick(rng, vis)
        shape = v.type.tensor_type.shape
        action = _pick(rng, ("value", "value", "param", "add", "drop", "clear"))
        if action == "clear":
            v.type.tensor_type.ClearField("shape")
        elif action == "add":
            shape.dim.add().dim_value = int(_pick(rng, DIMS))
        elif action == "drop" and len(shape.dim):
            del shape.dim[int(rng.integers(len(shape.dim)))]
        elif len(shape.dim):
            d = shape.dim[int(rng.integers(len(shape.dim)))]
            if action == "param":
                d.dim_param = str(_pick(rng, ("N", "batch", "", "1", "-1")))
            else:
                d.dim_value = int(_pick(rng, DIMS))
        else:
            shape.dim.add().dim_value = int(_pick(rng, DIMS))
        return f"dims of value {v.name!r}: {action}"
    t = _pick(rng, _tensors(m))
    action = _pick(rng, ("value", "add", "drop"))
    if action == "add" or not len(t.dims):
        t.dims.append(int(_pick(rng, DIMS)))
    elif action == "drop":
        del t.dims[int(rng.integers(len(t.dims)))]
    else:
        t.dims[int(rng.integers(len(t.dims)))] = int(_pick(rng, DIMS))
    return f"dims of tensor {t.name!r}: {action} -> {list(t.dims)[:8]}"


def mutate_dtype(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """The element type of a value, a tensor, or a Cast-like attribute, to another or an invalid one."""
    new = int(_pick(rng, [*range(0, 27), 99, -1]))
    kind = int(rng.integers(3))
    if kind == 0:
        v = _pick(rng, [v for v in _value_infos(m) if v.type.HasField("tensor_type")])
        v.type.tensor_type.elem_type = new
        return f"elem_type of value {v.name!r} -> {new}"
    if kind == 1:
        t = _pick(rng, _tensors(m))
        t.data_type = new
        return f"data_type of tensor {t.name!r} -> {new}"
    attrs = [a for n in _nodes(m) for a in n.attribute if a.name in ("to", "dtype", "output_dtype")]
    a = _pick(rng, attrs)
    a.i = new
    return f"attribute {a.name} -> {new}"


def mutate_attribute(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Set an attribute the op's schema knows (present or not) to an edge value, give one the
    wrong type, drop it, duplicate it, or add an unknown one."""
    node = _pick(rng, _nodes(m))
    action = _pick(rng, ("schema", "schema", "schema", "retype", "drop", "dup", "unknown"))
    if action == "schema":
        try:
            schema = onnx.defs.get_schema(node.op_type, domain=node.domain)
        except Exception as e:
            raise NotApplicable(node.op_type) from e
        attr = _pick(rng, list(schema.attributes.values()))
        value = _attr_value(rng, attr.type, m)
        for i, a in enumerate(node.attribute):
            if a.name == attr.name:
                del node.attribute[i]
                break
        node.attribute.append(helper.make_attribute(attr.name, value) if value is not None else _empty_attr(attr))
        return f"attribute {node.op_type}.{attr.name} = {_short(value)}"
    if action == "unknown":
        node.attribute.append(helper.make_attribute("bogus", int(_pick(rng, INTS))))
        return f"attribute {node.op_type}.bogus added"
    if not len(node.attribute):
        raise NotApplicable("no attributes")
    i = int(rng.integers(len(node.attribute)))
    a = node.attribute[i]
    if action == "drop":
        del node.attribute[i]
    elif action == "dup":
        node.attribute.add().CopyFrom(a)
    else:
        a.type = int(_pick(rng, [t for t in onnx.AttributeProto.AttributeType.values() if t != a.type]))
    return f"attribute {node.op_type}.{a.name}: {action}"


def _empty_attr(attr: Any) -> onnx.AttributeProto:
    """An attribute of the schema's name and type with no value set."""
    a = onnx.AttributeProto(name=attr.name)
    a.type = attr.type
    return a


def _attr_value(rng: np.random.Generator, typ: Any, m: onnx.ModelProto) -> Any:
    t = onnx.AttributeProto.AttributeType
    n = int(rng.integers(0, 6))
    if typ == t.INT:
        return int(_pick(rng, INTS))
    if typ == t.INTS:
        return [int(_pick(rng, INTS[:12])) for _ in range(n)]
    if typ == t.FLOAT:
        return float(_pick(rng, FLOATS))
    if typ == t.FLOATS:
        return [float(_pick(rng, FLOATS)) for _ in range(n)]
    if typ == t.STRING:
        return str(_pick(rng, ("", "NOTSET", "SAME_UPPER", "VALID", "constant", "reflect", "x" * 100)))
    if typ == t.STRINGS:
        return [str(_pick(rng, ("", "a", "tanh", "sigmoid"))) for _ in range(n)]
    if typ == t.TENSOR:
        shape = [int(x) for x in rng.integers(0, 3, int(rng.integers(0, 3)))]
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "t")
    if typ == t.GRAPH:
        return helper.make_graph([], "empty", [], [])
    return None


def mutate_names(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Dangling and clashing names: a node reads an undefined value, writes an existing one, a
    graph output or input or an initializer is renamed, a name becomes empty."""
    names = _names(m)
    action = _pick(rng, ("dangling_input", "clash_output", "graph_output", "graph_input", "initializer", "empty"))
    if action in ("dangling_input", "empty"):
        node = _pick(rng, [n for n in _nodes(m) if len(n.input)])
        k = int(rng.integers(len(node.input)))
        node.input[k] = "" if action == "empty" else f"ghost_{int(rng.integers(1000))}"
        return f"{action}: {node.op_type} input {k}"
    if action == "clash_output":
        node = _pick(rng, [n for n in _nodes(m) if len(n.output)])
        k = int(rng.integers(len(node.output)))
        node.output[k] = str(_pick(rng, names))
        return f"clash_output: {node.op_type} output {k} -> {node.output[k]!r}"
    g = _pick(rng, _graphs(m))
    seq = {"graph_output": g.output, "graph_input": g.input, "initializer": g.initializer}[action]
    if not len(seq):
        raise NotApplicable(action)
    item = seq[int(rng.integers(len(seq)))]
    item.name = str(_pick(rng, [*names, *ODD_NAMES]))
    return f"{action} of graph {g.name!r} -> {item.name!r}"


def mutate_cycle(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """A node reads its own output or the output of a node after it that depends on it."""
    lists = [nodes for nodes in _node_lists(m) if len(nodes) >= 1]
    nodes = _pick(rng, lists)
    j = int(rng.integers(len(nodes)))
    i = int(rng.integers(j + 1))
    src, dst = nodes[j], nodes[i]
    if not len(src.output) or not src.output[0]:
        raise NotApplicable("no output")
    if len(dst.input):
        dst.input[int(rng.integers(len(dst.input)))] = src.output[0]
    else:
        dst.input.append(src.output[0])
    return f"cycle: node {i} ({dst.op_type}) reads node {j} ({src.op_type})"


def mutate_structure(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Delete, duplicate or reorder nodes, initializers, inputs and outputs; make a function
    call itself; nest an empty If."""
    g = _pick(rng, _graphs(m))
    action = _pick(rng, ("del_node", "dup_node", "reverse", "del_init", "dup_init", "init_as_input",
                         "del_output", "del_all_outputs", "untyped_input", "recursive_function", "empty_if"))
    if action == "del_node" and len(g.node):
        del g.node[int(rng.integers(len(g.node)))]
    elif action == "dup_node" and len(g.node):
        g.node.add().CopyFrom(g.node[int(rng.integers(len(g.node)))])
    elif action == "reverse" and len(g.node):
        nodes = list(g.node)[::-1]
        copies = [onnx.NodeProto() for _ in nodes]
        for c, n in zip(copies, nodes):
            c.CopyFrom(n)
        del g.node[:]
        g.node.extend(copies)
    elif action == "del_init" and len(g.initializer):
        del g.initializer[int(rng.integers(len(g.initializer)))]
    elif action == "dup_init" and len(g.initializer):
        g.initializer.add().CopyFrom(g.initializer[int(rng.integers(len(g.initializer)))])
    elif action == "init_as_input" and len(g.initializer):
        t = g.initializer[int(rng.integers(len(g.initializer)))]
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    elif action == "del_output" and len(g.output):
        del g.output[int(rng.integers(len(g.output)))]
    elif action == "del_all_outputs":
        del g.output[:]
    elif action == "untyped_input":
        g.input.add().name = str(_pick(rng, _names(m) or ["x"]))
    elif action == "recursive_function" and len(m.functions):
        f = m.functions[0]
        f.node.append(helper.make_node(f.name, [f.output[0]], ["again"], domain=f.domain))
    elif action == "empty_if" and len(g.node):
        node = g.node[int(rng.integers(len(g.node)))]
        empty = helper.make_graph([], "empty", [], [])
        g.node.append(helper.make_node("If", [node.output[0] if len(node.output) else "c"], ["if_out"],
                                       then_branch=empty, else_branch=empty))
    else:
        raise NotApplicable(action)
    return f"structure {action} in graph {g.name!r}"


def mutate_versions(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """IR version and opset imports: edge values, duplicates, removals, other domains."""
    action = _pick(rng, ("ir", "opset", "dup_opset", "del_opset", "domain"))
    if action == "ir":
        m.ir_version = int(_pick(rng, (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 99, -1, 2**40)))
        return f"ir_version -> {m.ir_version}"
    if not len(m.opset_import):
        raise NotApplicable("no opset imports")
    k = int(rng.integers(len(m.opset_import)))
    imp = m.opset_import[k]
    if action == "opset":
        imp.version = int(_pick(rng, (0, 1, 5, 6, 7, 9, 10, 11, 12, 13, 14, 18, 20, 21, 22, 23, 24, 25, 26, 10**6, -1)))
    elif action == "dup_opset":
        m.opset_import.add(domain=imp.domain, version=imp.version + int(rng.integers(-3, 4)))
    elif action == "del_opset":
        del m.opset_import[k]
    else:
        imp.domain = str(_pick(rng, DOMAINS))
    return f"opset {action}: {imp.domain!r} {imp.version}"


def mutate_metadata(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Model metadata the compiler reads (the NCHWc block key) or carries along."""
    value = str(_pick(rng, ("8", "16", "0", "-1", "abc", "", " 8 ", "1e3", "99999999999999999999")))
    key = NCHWC_METADATA_KEY if rng.random() < 0.7 else str(_pick(rng, ("", "author", "x" * 200)))
    m.metadata_props.add(key=key, value=value)
    if rng.random() < 0.3:
        m.metadata_props.add(key=key, value=value + "1")
    return f"metadata {key[:40]!r} = {value!r}"
