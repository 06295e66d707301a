"""A standing bad-input fuzzer for the command line: ``python -m onnxforge.fuzz`` (``make fuzz``).

It mutates small models -- the seeded builders of :mod:`onnxforge.models`, a control-flow model,
a QDQ model, a model with external data and, when fetched, a few small corpus models -- and runs
``onnxforge compile`` and ``onnxforge analyze`` on every mutant in a child process with a time and
memory limit. A run is a *defect* when it

* prints a traceback or an ``internal error`` line,
* hangs (runs past ``--timeout``), dies by a signal, or exits with a code other than 0, 1 or 2,
* leaves an output (or temporary) file behind although it failed, or succeeds with an output
  that onnx cannot load and check,
* changes or adds a file in the input's folder, or
* fails with an error that is not exactly one ``onnxforge: error:`` line (log lines aside).

Refusing a mutant cleanly (exit 1 or 2) or compiling it is fine. Mutant ``i`` of seed ``s`` is a
pure function of ``(s, i)``: ``--seed s --replay i`` rebuilds it and reruns it in a fresh
interpreter with the whole stderr. Failing cases are saved under ``--out`` (the mutated files
and ``case.json``), at most three per distinct defect, and a summary table is printed. The exit
status is 1 when a defect was found.

Children: by default a *zygote* process imports onnxforge, onnx and onnxruntime once and forks
one child per run, which is many times faster than a fresh interpreter per run (importing onnx
alone takes about 0.7 s). ``--cold`` starts ``python -m onnxforge.cli`` for every run instead,
and every defect found warm is rerun cold, once per distinct defect, to confirm it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import TensorProto, helper, numpy_helper

import onnxforge.cli  # noqa: F401  (the zygote forks children with it imported)
from onnxforge.models.attention_blocks import attention_block
from onnxforge.models.cnn import small_cnn, transformer_block
from onnxforge.models.corpus import list_corpus
from onnxforge.models.synthetic import residual_mlp_chain
from onnxforge.runtime.choices import NCHWC_METADATA_KEY
from onnxforge.tables import format_table

MODEL = "model.onnx"
DATA = "weights.bin"
#: Small corpus models mutated besides the built-in ones (when present; see ``--corpus-models``).
DEFAULT_CORPUS = ("oww_hey_rhasspy", "ppocr_cls_mobile_v2", "silero_vad_16k_op15", "oww_melspectrogram")
CORPUS_WEIGHT = 0.25  # share of mutants taken from corpus models when some are present
GIB = 1 << 30

# --------------------------------------------------------------------------------------------
# Parent models
# --------------------------------------------------------------------------------------------


@dataclass
class Parent:
    """A model to mutate: the main file's proto (external data not loaded) and the other files
    beside it (external data), by file name."""

    name: str
    proto: onnx.ModelProto
    files: dict[str, bytes] = field(default_factory=dict)
    _fields: list[tuple[tuple[tuple[str, int | None], ...], str]] | None = None

    def fields(self) -> list[tuple[tuple[tuple[str, int | None], ...], str]]:
        """Every set field of the proto as (path to its message, field name); computed once."""
        if self._fields is None:
            self._fields = list(_field_paths(self.proto, ()))
        return self._fields


def _control_flow_model() -> onnx.ModelProto:
    """If branches reading outer-scope values, a Loop with a carried value and a scan output,
    and a call of a model-local function."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Add", ["s", "s"], ["t_out"], name="then_add")], "then", [],
        [helper.make_tensor_value_info("t_out", f, [3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["s", "x"], ["e_out"], name="else_sub")], "else", [],
        [helper.make_tensor_value_info("e_out", f, [3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Add", ["acc_in", "y"], ["acc_out"], name="body_add"),
            helper.make_node("Mul", ["acc_out", "two"], ["scan_out"], name="body_mul"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", f, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", f, [3]),
            helper.make_tensor_value_info("scan_out", f, [3]),
        ],
    )
    fn = helper.make_function(
        "local", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["s"], name="mul"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trip", "", "x"], ["acc", "scans"], name="loop", body=body),
        helper.make_node("Double", ["acc"], ["z"], name="double", domain="local"),
    ]
    g = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info("x", f, [3]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", f, [3]), helper.make_tensor_value_info("scans", f, ["n", 3])],
        [
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(3, dtype=np.int64), "trip"),
        ],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[fn]
    )
    m.ir_version = 8
    helper.set_model_props(m, {"author": "onnxforge.fuzz"})
    return m


def _qdq_model() -> onnx.ModelProto:
    """int8 weights behind DequantizeLinear, a quantized activation, and a Conv on top."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8), "w_q")
    ws = numpy_helper.from_array((rng.random(4) * 0.01 + 0.001).astype(np.float32), "w_scale")
    wz = numpy_helper.from_array(np.zeros(4, dtype=np.int8), "w_zero")
    xs = numpy_helper.from_array(np.array(0.02, dtype=np.float32), "x_scale")
    xz = numpy_helper.from_array(np.array(0, dtype=np.uint8), "x_zero")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], name="dq_w", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, ws, wz, xs, xz],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _external_parent() -> Parent:
    m = residual_mlp_chain(14, width=16)
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-") as tmp:
        path = Path(tmp) / MODEL
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=DATA, size_threshold=0)
        proto = onnx.load(path, load_external_data=False)
        data = (Path(tmp) / DATA).read_bytes()
    return Parent("mlp_external", proto, {DATA: data})


def builtin_parents() -> list[Parent]:
    """The built-in models every run mutates (seeded, a few KiB each)."""
    return [
        Parent("small_cnn", small_cnn(seed=0)[0]),
        Parent("mlp_chain", residual_mlp_chain(8, width=8)),
        Parent("transformer", transformer_block(seq=4, hidden=16, heads=2, dynamic_batch=True)[0]),
        Parent("attention", attention_block(mask="vmap", causal="vmap")),
        Parent("control_flow", _control_flow_model()),
        Parent("qdq", _qdq_model()),
        _external_parent(),
    ]


def corpus_parents(names: Sequence[str], max_bytes: int = 4 << 20) -> list[Parent]:
    """The named corpus models that are present and at most ``max_bytes`` (no network)."""
    present = list_corpus()
    out = []
    for name in names:
        path = present.get(name)
        if path is None or path.stat().st_size > max_bytes:
            continue
        proto = onnx.load(path, load_external_data=False)
        if any(t.data_location == TensorProto.EXTERNAL for t in _tensors(proto)):
            continue  # the corpus models embed their weights; keep it that way here
        out.append(Parent(f"corpus:{name}", proto))
    return out


# --------------------------------------------------------------------------------------------
# Walking a model proto
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


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
LOCATIONS = ("../" + DATA, "/etc/hostname", "", "missing.bin", "sub/" + DATA, ".", MODEL, DATA + "/", "//" + DATA,
             "link.bin", "dir", "\x00" + DATA)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    if not seq:
        raise NotApplicable("nothing to pick")
    return seq[int(rng.integers(len(seq)))]


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
        return str(_pick(rng, OPS + tuple({n.op_type for n in _nodes(m)})))
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


def mutate_tensor_data(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """A tensor's payload disagrees with its type or dims: raw data cut or grown, typed fields
    of the wrong kind, a string tensor, an embedded tensor that claims to be external."""
    t = _pick(rng, [t for t in _tensors(m) if t.data_location != TensorProto.EXTERNAL] or _tensors(m))
    action = _pick(rng, ("cut", "grow", "float_data", "int64_data", "string", "claims_external", "both"))
    if action == "cut":
        t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data) + 1))]
    elif action == "grow":
        t.raw_data = t.raw_data + rng.bytes(int(rng.integers(1, 17)))
    elif action == "float_data":
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * int(rng.integers(0, 5)))
    elif action == "int64_data":
        t.ClearField("raw_data")
        t.int64_data.extend([int(_pick(rng, INTS))] * int(rng.integers(0, 5)))
    elif action == "string":
        t.data_type = TensorProto.STRING
        t.string_data.append(b"abc")
    elif action == "claims_external":
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=str(_pick(rng, (DATA, "missing.bin", "../x", ""))))
        t.external_data.add(key="offset", value=str(_pick(rng, ("0", "4096", "-1", "x"))))
        if rng.random() < 0.5:
            t.external_data.add(key="length", value=str(_pick(rng, ("0", "16", "999999999999"))))
    else:
        t.float_data.append(2.0)  # raw and typed data both set
    return f"tensor data of {t.name!r}: {action}"


def mutate_values(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """A weight or constant keeps its type and shape but gets edge values: NaN, infinities,
    zeros, huge or tiny floats; for integers (shapes, axes, indices) edge and negative values.
    The model stays valid, so this reaches constant folding, fusions and shape arithmetic."""
    tensors = [t for t in _tensors(m) if t.data_location != TensorProto.EXTERNAL and t.data_type not in
               (TensorProto.STRING, TensorProto.UNDEFINED)]
    t = _pick(rng, tensors)
    try:
        arr = np.array(numpy_helper.to_array(t))
    except Exception as e:
        raise NotApplicable(t.name) from e
    if arr.size == 0 or arr.dtype.kind not in "fiub":
        raise NotApplicable(t.name)
    flat = arr.reshape(-1)
    where = np.arange(flat.size) if rng.random() < 0.4 else rng.choice(flat.size, int(rng.integers(1, flat.size + 1)))
    if arr.dtype.kind == "f":
        value = _pick(rng, (np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, 65504.0, 1.0))
    elif arr.dtype.kind == "b":
        value = bool(rng.integers(2))
    else:
        info = np.iinfo(arr.dtype)
        value = min(max(int(_pick(rng, (*INTS, -2, -3, 4))), int(info.min)), int(info.max))
    with np.errstate(all="ignore"):
        flat[where] = value
    new = numpy_helper.from_array(arr, t.name)
    if t.data_type != new.data_type:
        raise NotApplicable(t.name)
    t.CopyFrom(new)
    return f"values of {t.name!r}: {len(where)} of {flat.size} set to {value!r}"


def mutate_external(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent, files: dict[str, Any]) -> str:
    """External data references: offsets, lengths and locations that are negative, huge,
    unparsable, outside the folder, a folder, a link out, missing; the data file cut or empty."""
    ext = [t for t in _tensors(m) if t.data_location == TensorProto.EXTERNAL]
    if not ext or DATA not in files:
        raise NotApplicable("no external data")
    t = _pick(rng, ext)
    entries = {e.key: e for e in t.external_data}
    size = len(files[DATA]) if isinstance(files[DATA], bytes) else 0
    action = _pick(rng, ("offset", "offset", "length", "length", "location", "location", "drop_key",
                         "dup_key", "unknown_key", "cut_file", "empty_file", "file_is_dir", "link_out"))
    if action in ("offset", "length"):
        value = str(_pick(rng, ("-1", "x", "", "1e3", " 4", "0x10", str(size), str(size + 1), str(size - 1),
                                str(2**63), str(2**64 + 5), "4095", "3", "99999999999999999999999")))
        if action in entries:
            entries[action].value = value
        else:
            t.external_data.add(key=action, value=value)
        return f"external {action} of {t.name!r} -> {value!r}"
    if action == "location":
        value = str(_pick(rng, LOCATIONS))
        if value == "link.bin":
            files["link.bin"] = Symlink("/etc/hostname")
        elif value == "dir":
            files["dir"] = Folder()
        entries["location"].value = value
        return f"external location of {t.name!r} -> {value!r}"
    if action == "drop_key":
        key = _pick(rng, list(entries))
        for i, e in enumerate(t.external_data):
            if e.key == key:
                del t.external_data[i]
                break
        return f"external key {key!r} of {t.name!r} dropped"
    if action == "dup_key":
        key = _pick(rng, list(entries))
        t.external_data.add(key=key, value=str(_pick(rng, ("0", DATA, "missing.bin"))))
        return f"external key {key!r} of {t.name!r} duplicated"
    if action == "unknown_key":
        t.external_data.add(key=str(_pick(rng, ("checksum", "basepath", ""))), value="1")
        return f"external unknown key on {t.name!r}"
    if action == "cut_file":
        files[DATA] = files[DATA][: int(rng.integers(size + 1))]
    elif action == "empty_file":
        files[DATA] = b""
    elif action == "file_is_dir":
        files[DATA] = Folder()
    else:
        files[DATA] = Symlink("/etc/hostname")
    return f"external file: {action}"


def mutate_metadata(rng: np.random.Generator, m: onnx.ModelProto, parent: Parent) -> str:
    """Model metadata the compiler reads (the NCHWc block key) or carries along."""
    value = str(_pick(rng, ("8", "16", "0", "-1", "abc", "", " 8 ", "1e3", "99999999999999999999")))
    key = NCHWC_METADATA_KEY if rng.random() < 0.7 else str(_pick(rng, ("", "author", "x" * 200)))
    m.metadata_props.add(key=key, value=value)
    if rng.random() < 0.3:
        m.metadata_props.add(key=key, value=value + "1")
    return f"metadata {key[:40]!r} = {value!r}"


PROTO_MUTATORS: tuple[tuple[str, Callable[..., str], float], ...] = (
    ("field", mutate_field, 5.0),
    ("dims", mutate_dims, 2.0),
    ("dtype", mutate_dtype, 1.5),
    ("attribute", mutate_attribute, 2.5),
    ("names", mutate_names, 1.5),
    ("cycle", mutate_cycle, 0.7),
    ("structure", mutate_structure, 1.5),
    ("versions", mutate_versions, 0.7),
    ("tensor_data", mutate_tensor_data, 1.2),
    ("values", mutate_values, 2.5),
    ("external", mutate_external, 2.0),
    ("metadata", mutate_metadata, 0.4),
)


def mutate_bytes(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """Byte-level damage: truncation, bit flips, edge bytes, a chunk deleted or repeated."""
    if not data:
        return b"\x08", "bytes: one byte"
    n = len(data)
    action = _pick(rng, ("truncate", "bitflip", "bitflip", "bytes", "chunk_del", "chunk_dup", "append"))
    buf = bytearray(data)
    if action == "truncate":
        cut = int(rng.integers(n))
        return bytes(buf[:cut]), f"bytes: truncated at {cut} of {n}"
    if action == "bitflip":
        k = int(rng.integers(1, 5))
        for _ in range(k):
            buf[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
        return bytes(buf), f"bytes: {k} bit flips"
    if action == "bytes":
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(n))] = int(_pick(rng, (0, 0xFF, 0x7F, 0x80, 0x01, 0x0A, 0x12)))
        return bytes(buf), "bytes: edge values"
    i = int(rng.integers(n))
    j = min(n, i + int(rng.integers(1, 65)))
    if action == "chunk_del":
        return bytes(buf[:i] + buf[j:]), f"bytes: deleted {i}:{j}"
    if action == "chunk_dup":
        return bytes(buf[:j] + buf[i:j] + buf[j:]), f"bytes: repeated {i}:{j}"
    return bytes(buf) + rng.bytes(int(rng.integers(1, 33))), "bytes: garbage appended"


@dataclass(frozen=True)
class Symlink:
    """A file of a mutant that is a symbolic link to ``target``."""

    target: str


@dataclass(frozen=True)
class Folder:
    """A "file" of a mutant that is an empty folder."""


@dataclass
class Mutant:
    index: int
    parent: str
    files: dict[str, Any]  # name -> bytes | Symlink | Folder; MODEL is the model
    mutations: list[str]
    compile_args: list[str]
    analyze_args: list[str]


COMPILE_VARIANTS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 4.0),  # the default optimize pipeline
    (("--pipeline", "lossless", "--no-cost"), 2.0),
    (("--target", "cpu"), 2.0),
    (("--target", "cpu-native"), 1.0),
    (("--verify",), 1.0),
    (("--external-data", "always"), 1.0),
    (("--pipeline", "lossless", "--check-ir", "--no-cost"), 1.0),
    (("--target", "tensorrt", "--report", "@OUT/report.json"), 0.5),
)
ANALYZE_VARIANTS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 3.0),
    (("--json",), 1.0),
    (("--no-probe",), 2.0),
    (("--target", "h100", "--top", "3"), 1.0),
)


def _weighted(rng: np.random.Generator, items: Sequence[tuple[Any, ...]]) -> Any:
    w = np.array([it[-1] for it in items], dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


class Generator:
    """Builds mutant ``i`` of a seed, always the same for the same (seed, i, parents)."""

    def __init__(self, parents: Sequence[Parent], seed: int) -> None:
        if not parents:
            raise ValueError("no parent models")
        self.builtin = [p for p in parents if not p.name.startswith("corpus:")]
        self.corpus = [p for p in parents if p.name.startswith("corpus:")]
        self.seed = seed

    def parent_for(self, rng: np.random.Generator) -> Parent:
        if self.corpus and (not self.builtin or rng.random() < CORPUS_WEIGHT):
            return _pick(rng, self.corpus)
        return _pick(rng, self.builtin)

    def mutant(self, index: int) -> Mutant:
        rng = np.random.default_rng([self.seed, index])
        parent = self.parent_for(rng)
        files: dict[str, Any] = dict(parent.files)
        m = onnx.ModelProto()
        m.CopyFrom(parent.proto)
        done: list[str] = []
        byte_only = rng.random() < 0.15
        wanted = 0 if byte_only else 1 + int(rng.geometric(0.55) - 1)
        tries = 0
        while len(done) < wanted and tries < 20:
            tries += 1
            name, fn, _ = _weighted(rng, PROTO_MUTATORS)
            try:
                done.append(fn(rng, m, parent, files) if name == "external" else fn(rng, m, parent))
            except NotApplicable:
                continue
            except (ValueError, TypeError, IndexError) as e:  # protobuf refused the value
                done.append(f"{name}: not applied ({type(e).__name__})")
        try:
            data = m.SerializeToString()
        except Exception as e:  # e.g. a string field that is not UTF-8
            data = parent.proto.SerializeToString()
            done.append(f"unserializable ({type(e).__name__}); parent bytes used")
        if byte_only or rng.random() < 0.1:
            data, desc = mutate_bytes(rng, data)
            done.append(desc)
        files[MODEL] = data
        c_args = list(_weighted(rng, COMPILE_VARIANTS)[0])
        if rng.random() < 0.1:
            nodes = _nodes(m)
            if nodes:
                c_args += ["--explain", _pick(rng, nodes).name or "n"]
        a_args = list(_weighted(rng, ANALYZE_VARIANTS)[0])
        return Mutant(index, parent.name, files, done, c_args, a_args)


# --------------------------------------------------------------------------------------------
# Running the command line in a child process
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    rc: int | None
    signal: int | None
    timed_out: bool
    seconds: float
    stdout: str = ""
    stderr: str = ""
    maxrss_kib: int = 0


def _limit(memory: int) -> None:
    """In the child: its own process group, bounded address space and file sizes, no core."""
    os.setpgid(0, 0)
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * GIB, 2 * GIB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _entry(spec: str) -> Callable[[list[str]], int]:
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)  # type: ignore[no-any-return]


def _child_main(entry: str, argv: list[str]) -> int:
    """What ``python -m onnxforge.cli ARGV`` does, in a forked child: exceptions that escape
    ``main`` print the interpreter's traceback and exit 1."""
    sys.argv = ["onnxforge", *argv]
    try:
        code = _entry(entry)(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    return int(code or 0) & 0xFF


def _zygote() -> None:
    """Serve run requests (JSON lines on stdin) by forking; replies on the original stdout."""
    proto_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed while importing goes to stderr, not into the protocol
    for line in sys.stdin:
        req = json.loads(line)
        if "preload" in req:
            for name in req["preload"]:
                if name in sys.modules or name.startswith(("_pytest", "pytest", "onnxforge.fuzz")):
                    continue
                try:
                    importlib.import_module(name)
                except BaseException:  # noqa: BLE001 - a module that cannot be preloaded is loaded later
                    pass
            proto_out.write(json.dumps({"ok": True}) + "\n")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                _limit(int(req["memory"]))
                os.chdir(req["cwd"])
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                code = _child_main(req["entry"], req["argv"])
                if req.get("modules"):
                    Path(req["modules"]).write_text("\n".join(sorted(sys.modules)))
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        reply = _wait(pid, float(req["timeout"]), start)
        proto_out.write(json.dumps(reply) + "\n")


def _wait(pid: int, timeout: float, start: float) -> dict[str, Any]:
    """Wait for ``pid`` (killing its process group at the timeout): rc, signal, rusage."""
    deadline = start + timeout
    pause = 0.001
    timed_out = False
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with _suppress():
                os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(pause)
        pause = min(pause * 1.5, 0.02)
    with _suppress():  # grandchildren of a killed or finished child
        os.killpg(pid, signal.SIGKILL)
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return {"rc": rc, "signal": None if timed_out else sig, "timed_out": timed_out,
            "seconds": time.monotonic() - start, "maxrss_kib": int(usage.ru_maxrss)}


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a crash in C code shows where (and is a defect anyway)
    env.pop("PYTHONSTARTUP", None)
    return env


class Runner:
    """Runs the CLI (or ``entry``) on an argv in a child with a timeout and a memory limit.
    ``warm``: children forked from a zygote that has everything imported; else a fresh
    ``python -m onnxforge.cli`` per run."""

    def __init__(self, *, warm: bool = True, timeout: float = 60.0, memory: int = 3 * GIB) -> None:
        self.warm = warm
        self.timeout = timeout
        self.memory = memory
        self._zygote: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        z, self._zygote = self._zygote, None
        if z is not None:
            with _suppress():
                z.stdin.close()  # type: ignore[union-attr]
            try:
                z.wait(timeout=5)
            except subprocess.TimeoutExpired:
                z.kill()
                z.wait()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", "from onnxforge.fuzz import _zygote; _zygote()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=_child_env(), bufsize=1,
            )
        return self._zygote

    def preload(self, modules: Sequence[str]) -> None:
        """Import ``modules`` in the zygote so that children need not."""
        if self.warm:
            z = self._start()
            z.stdin.write(json.dumps({"preload": list(modules)}) + "\n")  # type: ignore[union-attr]
            z.stdin.flush()  # type: ignore[union-attr]
            z.stdout.readline()  # type: ignore[union-attr]

    def run(self, argv: Sequence[str], cwd: Path, *, entry: str = "onnxforge.cli:main",
            timeout: float | None = None, modules: Path | None = None) -> RunResult:
        timeout = self.timeout if timeout is None else timeout
        out_path, err_path = cwd / ".fuzz-stdout", cwd / ".fuzz-stderr"
        if self.warm:
            reply = self._run_warm(list(argv), cwd, entry, timeout, out_path, err_path, modules)
        else:
            reply = self._run_cold(list(argv), cwd, entry, timeout, out_path, err_path)
        res = RunResult(reply["rc"], reply["signal"], reply["timed_out"], reply["seconds"],
                        maxrss_kib=reply.get("maxrss_kib", 0))
        for attr, p in (("stdout", out_path), ("stderr", err_path)):
            try:
                setattr(res, attr, p.read_bytes()[-200_000:].decode("utf-8", "replace"))
                p.unlink()
            except OSError:
                pass
        return res

    def _run_warm(self, argv: list[str], cwd: Path, entry: str, timeout: float, out_path: Path,
                  err_path: Path, modules: Path | None) -> dict[str, Any]:
        req = {"argv": argv, "cwd": str(cwd), "entry": entry, "timeout": timeout, "memory": self.memory,
               "stdout": str(out_path), "stderr": str(err_path), "modules": str(modules) if modules else ""}
        with self._lock:
            for _ in range(2):
                z = self._start()
                try:
                    z.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
                    z.stdin.flush()  # type: ignore[union-attr]
                    line = z.stdout.readline()  # type: ignore[union-attr]
                except (BrokenPipeError, OSError):
                    line = ""
                if line:
                    return json.loads(line)  # type: ignore[no-any-return]
                self.close()  # the zygote died (never the CLI's fault): start another
        return self._run_cold(argv, cwd, entry, timeout, out_path, err_path)

    def _run_cold(self, argv: list[str], cwd: Path, entry: str, timeout: float, out_path: Path,
                  err_path: Path) -> dict[str, Any]:
        if entry == "onnxforge.cli:main":
            cmd = [sys.executable, "-m", "onnxforge.cli", *argv]
        else:
            module, _, fn = entry.partition(":")
            code = f"import sys; from {module} import {fn} as f; sys.exit(f(sys.argv[1:]))"
            cmd = [sys.executable, "-c", code, *argv]
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=_child_env(), preexec_fn=lambda: _limit(self.memory))
            return _wait(proc.pid, timeout, start)


# --------------------------------------------------------------------------------------------
# What counts as a defect
# --------------------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
#: onnxruntime's own log lines: ``<colour>2026-01-01 10:00:00.1 [E:onnxruntime:, file.cc:12 Function] ...``
_ORT_LOG = re.compile(r"\[([EWIVF]):onnxruntime:[^,\]]*,\s*([\w.]+):\d+ ([^\]]+)\]")
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')


@dataclass(frozen=True)
class Problem:
    kind: str  # hang, signal, traceback, internal-error, exit-code, output-on-failure, ...
    command: str  # compile or analyze
    detail: str

    @property
    def signature(self) -> str:
        return f"{self.kind} [{self.command}] {self.detail}"


def _normalize(text: str) -> str:
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'*'", text)
    text = re.sub(r"(/[\w.+-]+)+", "<path>", text)
    text = re.sub(r"\d+", "N", text)
    return " ".join(text.split())[:200]


def _traceback_site(stderr: str) -> str:
    """``ExcType: message at file:function`` of the last traceback in ``stderr``."""
    lines = stderr.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)"))
    frames = [m.groups() for m in map(_FRAME.match, lines[start:]) if m]
    ours = [f for f in frames if "onnxforge" in f[0] or "/work/" in f[0]] or frames
    site = ""
    if ours:
        path, func = ours[-1]
        site = f" at {'/'.join(Path(path).parts[-2:])}:{func}"
    exc = next((ln for ln in reversed(lines[start:]) if ln and not ln.startswith(" ")), "?")
    return _normalize(exc) + site


def check_run(command: str, res: RunResult, out_dir: Path | None, produced: Sequence[Path]) -> list[Problem]:
    """The defects one run shows (see the module docstring). ``out_dir``: the folder the run
    could write to; ``produced``: the files a successful compile must have written."""
    problems: list[Problem] = []

    def add(kind: str, detail: str) -> None:
        problems.append(Problem(kind, command, detail))

    if res.timed_out:
        add("hang", f"no exit within {res.seconds:.0f} s")
        return problems
    if res.signal is not None:
        try:
            name = signal.Signals(res.signal).name
        except ValueError:
            name = str(res.signal)
        where = re.search(r'most recent call first\):\n\s*File "([^"]+)", line \d+ in (\S+)', res.stderr)
        site = f" in {'/'.join(Path(where[1]).parts[-2:])}:{where[2]}" if where else ""
        add("signal", f"killed by {name}{site}")
    elif "Traceback (most recent call last)" in res.stderr:
        add("traceback", _traceback_site(res.stderr))
    elif "Fatal Python error" in res.stderr:
        add("traceback", "fatal Python error " + _normalize(res.stderr.split("Fatal Python error", 1)[1].split("\n")[0]))
    internal = [ln for ln in res.stderr.splitlines() if "internal error" in ln]
    if internal:
        add("internal-error", _normalize(internal[0].split("internal error:", 1)[-1].split("(run with -v")[0]))
    if res.rc is not None and res.rc not in (0, 1, 2):
        add("exit-code", f"exit code {res.rc}")
    leftovers = sorted(p.name for p in out_dir.iterdir()) if out_dir is not None and out_dir.is_dir() else []
    if res.rc != 0:
        if leftovers:
            add("output-on-failure", f"files left after exit {res.rc}: {', '.join(_normalize(n) for n in leftovers[:3])}")
        if res.rc in (1, 2) and not problems:
            rest = [ln for ln in res.stderr.splitlines() if ln.strip() and not _LOG_LINE.match(ln)]
            ort = _ORT_LOG.search(res.stderr)
            if ort:
                add("messy-error", f"onnxruntime log line before the error ({ort[1]}: {ort[2]} {ort[3]})")
            elif len(rest) != 1 or not rest[0].startswith("onnxforge: error:"):
                first = rest[0] if rest else "(nothing)"
                add("messy-error", f"{len(rest)} error lines, first: {_normalize(first)}")
            elif len(rest[0]) > 1000:
                add("messy-error", f"error line of {len(rest[0])} characters")
        return problems
    expected = {p.name for p in produced}
    extra = [n for n in leftovers if n not in expected and not n.endswith(".data")]
    if extra:
        add("leftover-files", f"unexpected files after success: {', '.join(_normalize(n) for n in extra[:3])}")
    for p in produced:
        if not p.is_file():
            add("bad-output", f"exit 0 but {p.name} was not written")
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            else:
                onnx.checker.check_model(str(p), full_check=False)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            add("bad-output", f"{p.suffix} output does not load: {_normalize(first)}")
    return problems


#: Clean one-line failures that still hide a Python error in a pass or a swallowed step: not
#: defects by the rules above (the CLI reports them as designed), but counted and listed.
_NOTE = re.compile(r"(pass '[\w-]+' failed|WARNING [\w.]+: [^:]*failed[^:]*): (\w+(?:Error|Exception))\b")


def notes(res: RunResult) -> list[str]:
    found = {f"{m[1]}: {m[2]}" for m in _NOTE.finditer(res.stderr)}
    if res.rc == 0:
        found |= {f"onnxruntime log line on a success ({m[1]}: {m[2]} {m[3]})" for m in _ORT_LOG.finditer(res.stderr)}
    return sorted(found)


def _digest_folder(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.name.startswith(".fuzz-"):
            continue
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _write_files(folder: Path, files: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = folder / name
        if isinstance(content, Symlink):
            os.symlink(content.target, p)
        elif isinstance(content, Folder):
            p.mkdir()
        else:
            p.write_bytes(content)


@dataclass
class CaseResult:
    mutant: Mutant
    runs: dict[str, RunResult]
    problems: list[Problem]


def run_mutant(runner: Runner, mutant: Mutant, work: Path) -> CaseResult:
    """Write the mutant under ``work``, compile and analyze it, and check every run."""
    in_dir, out_dir = work / "in", work / "out"
    _write_files(in_dir, mutant.files)
    out_dir.mkdir(parents=True)
    model = in_dir / MODEL
    before = _digest_folder(in_dir)
    problems: list[Problem] = []
    runs: dict[str, RunResult] = {}
    out = out_dir / "compiled.onnx"
    c_args = [a.replace("@OUT", str(out_dir)) for a in mutant.compile_args]
    for command, argv, folder in (
        ("compile", ["compile", str(model), "-o", str(out), *c_args], out_dir),
        ("analyze", ["analyze", str(model), *mutant.analyze_args], None),
    ):
        res = runner.run(argv, work)
        runs[command] = res
        produced = [out] + [out_dir / "report.json" for a in c_args if a.endswith("report.json")] if command == "compile" else []
        problems += check_run(command, res, folder, produced)
        after = _digest_folder(in_dir)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(Problem("input-modified", command, f"changed: {', '.join(changed[:3])}"))
            before = after
    return CaseResult(mutant, runs, problems)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80] or "case"


@dataclass
class Stats:
    mutants: int = 0
    runs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, list[int]] = field(default_factory=dict)
    first: dict[str, CaseResult] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    note_first: dict[str, int] = field(default_factory=dict)
    confirmed: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0
    run_seconds: float = 0.0
    max_rss_kib: int = 0
    harness_errors: int = 0


def _save_case(out: Path, case: CaseResult, problem: Problem, seed: int, confirmed: bool | None) -> Path:
    folder = out / _slug(problem.signature) / f"mutant-{case.mutant.index}"
    if folder.exists():
        shutil.rmtree(folder)
    _write_files(folder, case.mutant.files)
    run = case.runs.get(problem.command)
    info = {
        "seed": seed,
        "index": case.mutant.index,
        "parent": case.mutant.parent,
        "mutations": case.mutant.mutations,
        "problem": {"kind": problem.kind, "command": problem.command, "detail": problem.detail},
        "all_problems": [p.signature for p in case.problems],
        "compile_args": case.mutant.compile_args,
        "analyze_args": case.mutant.analyze_args,
        "rc": run.rc if run else None,
        "signal": run.signal if run else None,
        "timed_out": run.timed_out if run else None,
        "seconds": round(run.seconds, 3) if run else None,
        "stderr": run.stderr[-5000:] if run else "",
        "confirmed_cold": confirmed,
        "replay": f"python -m onnxforge.fuzz --seed {seed} --replay {case.mutant.index}",
    }
    (folder / "case.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def _warm_up(runner: Runner, root: Path) -> None:
    """Run one good compile and analyze in a child (filling the on-disk caches: CPU profile,
    onnxruntime choices), then import in the zygote every module those runs imported."""
    folder = root / "warmup"
    folder.mkdir(parents=True)
    onnx.save(small_cnn(seed=0)[0], folder / MODEL)
    modules: set[str] = set()
    for i, argv in enumerate((["compile", str(folder / MODEL), "-o", str(folder / "o.onnx"), "--target", "cpu-native",
                               "--verify"], ["analyze", str(folder / MODEL)], ["compile", str(folder / MODEL), "-o",
                               str(folder / "o2.onnx"), "--pipeline", "lossless", "--check-ir"])):
        listing = folder / f"modules{i}.txt"
        runner.run(argv, folder, timeout=max(runner.timeout, 120.0), modules=listing)
        if listing.is_file():
            modules |= set(listing.read_text().split())
    runner.preload(sorted(modules))


def fuzz(
    *,
    seconds: float,
    seed: int,
    parents: Sequence[Parent],
    out: Path | None,
    workers: int = 1,
    warm: bool = True,
    timeout: float = 60.0,
    memory: int = 3 * GIB,
    max_mutants: int | None = None,
    per_signature: int = 3,
    log: Callable[[str], None] = print,
) -> Stats:
    """Run mutants ``0, 1, 2, ...`` of ``seed`` until ``seconds`` (or ``max_mutants``) are spent."""
    gen = Generator(parents, seed)
    stats = Stats()
    workers = max(1, min(workers, 2))
    root = Path(tempfile.mkdtemp(prefix="onnxforge-fuzz-"))
    runners = [Runner(warm=warm, timeout=timeout, memory=memory) for _ in range(workers)]
    free = list(runners)
    lock = threading.Lock()
    try:
        if warm:
            for r in runners:
                _warm_up(r, root / f"w{id(r)}")
        start = time.monotonic()
        deadline = start + seconds

        def job(i: int) -> CaseResult:
            with lock:
                runner = free.pop()
            try:
                work = root / str(i)
                try:
                    return run_mutant(runner, gen.mutant(i), work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            finally:
                with lock:
                    free.append(runner)

        index = 0
        failing = 0  # harness errors in a row (mutant generation, file writes): not CLI defects
        pending: set[Future[CaseResult]] = set()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while True:
                while (len(pending) < workers and time.monotonic() < deadline
                       and (max_mutants is None or index < max_mutants)):
                    pending.add(pool.submit(job, index))
                    index += 1
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        case = fut.result()
                    except Exception as e:
                        stats.harness_errors += 1
                        failing += 1
                        log(f"  harness error (not a CLI defect): {type(e).__name__}: {e}")
                        if failing >= 20:
                            raise
                        continue
                    failing = 0
                    _record(case, stats, out, seed, per_signature, log, timeout, memory)
        stats.seconds = time.monotonic() - start
    finally:
        for r in runners:
            r.close()
        shutil.rmtree(root, ignore_errors=True)
    return stats


def _record(case: CaseResult, stats: Stats, out: Path | None, seed: int, per_signature: int,
            log: Callable[[str], None], timeout: float, memory: int) -> None:
    stats.mutants += 1
    for command, res in case.runs.items():
        stats.runs += 1
        stats.run_seconds += res.seconds
        stats.max_rss_kib = max(stats.max_rss_kib, res.maxrss_kib)
        outcome = "timeout" if res.timed_out else f"signal {res.signal}" if res.signal else f"exit {res.rc}"
        stats.outcomes[f"{command}: {outcome}"] += 1
        for note in notes(res):
            stats.notes[note] += 1
            stats.note_first.setdefault(note, case.mutant.index)
    for problem in dict.fromkeys(case.problems):
        sig = problem.signature
        seen = stats.signatures.setdefault(sig, [])
        seen.append(case.mutant.index)
        confirmed = None
        if len(seen) == 1:
            stats.first[sig] = case
            confirmed = _confirm_cold(case, problem, timeout, memory)
            stats.confirmed[sig] = confirmed
            log(f"  defect at mutant {case.mutant.index} ({case.mutant.parent}: {'; '.join(case.mutant.mutations)}): "
                f"{sig}{'' if confirmed else ' (not reproduced in a fresh interpreter)'}")
        if out is not None and len(seen) <= per_signature:
            _save_case(out, case, problem, seed, confirmed if len(seen) == 1 else None)


def _confirm_cold(case: CaseResult, problem: Problem, timeout: float, memory: int) -> bool:
    """Rerun a mutant in a fresh ``python -m onnxforge.cli``: does the problem come back?"""
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-confirm-") as tmp, \
            Runner(warm=False, timeout=timeout, memory=memory) as runner:
        again = run_mutant(runner, case.mutant, Path(tmp) / "case")
    return any(p.kind == problem.kind and p.command == problem.command for p in again.problems)


def summary(stats: Stats, seed: int) -> list[str]:
    rate = stats.mutants / stats.seconds if stats.seconds else 0.0
    lines = [
        f"fuzz: seed {seed}, {stats.mutants} mutants, {stats.runs} runs in {stats.seconds:.1f} s "
        f"({rate:.2f} mutants/s, {stats.run_seconds / max(stats.runs, 1) * 1000:.0f} ms per run, "
        f"peak child memory {stats.max_rss_kib / 1024:.0f} MiB)",
        "outcomes: " + ", ".join(f"{k} x{v}" for k, v in sorted(stats.outcomes.items())),
    ]
    if stats.harness_errors:
        lines.append(f"harness errors (mutants not run): {stats.harness_errors}")
    if stats.notes:
        lines.append("not defects, but a Python error behind a clean message (count, first mutant):")
        lines += [f"  {n:>5}  {stats.note_first[k]:>6}  {k[:120]}" for k, n in stats.notes.most_common(15)]
    if not stats.signatures:
        lines.append("no defects found")
        return lines
    rows = []
    for sig, seen in sorted(stats.signatures.items(), key=lambda kv: -len(kv[1])):
        case = stats.first[sig]
        rows.append([str(len(seen)), "yes" if stats.confirmed.get(sig) else "no", str(case.mutant.index),
                     case.mutant.parent, sig[:110]])
    lines.append(f"{len(stats.signatures)} distinct defects:")
    lines += ["  " + ln for ln in format_table(["count", "cold", "first", "parent", "defect"], rows, left=(3, 4))]
    return lines


# --------------------------------------------------------------------------------------------
# Self-check: the harness notices each kind of defect
# --------------------------------------------------------------------------------------------


def _misbehave(argv: list[str]) -> int:
    """A stand-in CLI for ``--self-check``: ``argv[0]`` says how to misbehave."""
    how, rest = argv[0], argv[1:]
    out = Path(rest[rest.index("-o") + 1]) if "-o" in rest else None
    if how == "hang":
        time.sleep(3600)
    if how == "signal":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "raise":
        raise RuntimeError("self-check")
    if how == "internal":
        print("onnxforge: internal error: KeyError: 'x' (run with -v for the traceback)", file=sys.stderr)
        return 1
    if how == "two-lines":
        print("onnxforge: error: one\nand another", file=sys.stderr)
        return 1
    if how == "leave-output" and out is not None:
        out.write_bytes(b"partial")
        print("onnxforge: error: failed after writing", file=sys.stderr)
        return 1
    if how == "touch-input":
        with open(rest[1], "ab") as f:
            f.write(b"\0")
        return 0 if out is None else _misbehave(["ok", *rest])
    if how == "exit-7":
        return 7
    if how == "refuse":
        print("WARNING onnxforge.x: a warning is fine", file=sys.stderr)
        print("onnxforge: error: clean refusal", file=sys.stderr)
        return 1
    if out is not None:  # ok
        onnx.save(small_cnn()[0], out)
    return 0


SELF_CHECKS = {
    "hang": "hang", "signal": "signal", "raise": "traceback", "internal": "internal-error",
    "two-lines": "messy-error", "leave-output": "output-on-failure", "touch-input": "input-modified",
    "exit-7": "exit-code", "refuse": None, "ok": None,
}


def self_check(warm: bool = True, log: Callable[[str], None] = print) -> bool:
    """Run the stand-in CLI's misbehaviours through the harness: each must be caught, and the
    clean refusal and the clean success must not be."""
    good = True
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-self-") as tmp, \
            Runner(warm=warm, timeout=3.0) as runner:
        for how, expected in SELF_CHECKS.items():
            work = Path(tmp) / how
            in_dir, out_dir = work / "in", work / "out"
            in_dir.mkdir(parents=True)
            out_dir.mkdir()
            model = in_dir / MODEL
            model.write_bytes(b"model")
            before = _digest_folder(in_dir)
            out = out_dir / "compiled.onnx"
            res = runner.run([how, "compile", str(model), "-o", str(out)], work, entry="onnxforge.fuzz:_misbehave")
            problems = check_run("compile", res, out_dir, [out])
            if _digest_folder(in_dir) != before:
                problems.append(Problem("input-modified", "compile", "changed"))
            kinds = {p.kind for p in problems}
            ok = expected in kinds if expected else not kinds
            good &= ok
            log(f"  self-check {how:<13} {'ok' if ok else 'MISSED'}: {sorted(kinds) or 'clean'}")
    return good


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m onnxforge.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="time budget (default 120)")
    p.add_argument("--seed", type=int, default=0, help="mutant i of a seed is always the same (default 0)")
    p.add_argument("--max-mutants", type=int, help="stop after this many mutants")
    p.add_argument("--out", default="out/fuzz", help="folder for failing cases (default out/fuzz)")
    p.add_argument("--models", help="comma-separated built-in models to mutate (default: all): "
                   + ", ".join(_BUILTIN_NAMES))
    p.add_argument("--corpus-models", default=",".join(DEFAULT_CORPUS),
                   help="comma-separated corpus models to mutate when present ('' or 'none': none)")
    p.add_argument("--workers", type=int, default=1, choices=[1, 2], help="mutants run side by side (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as a hang (default 60)")
    p.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit per run (default 3 GiB)")
    p.add_argument("--cold", action="store_true", help="a fresh interpreter per run (slower; what users run)")
    p.add_argument("--replay", help="comma-separated mutant indices: rebuild, run cold and show them")
    p.add_argument("--self-check", action="store_true", help="check that the harness catches each kind of defect")
    return p


_BUILTIN_NAMES = ("small_cnn", "mlp_chain", "transformer", "attention", "control_flow", "qdq", "mlp_external")


def select_parents(models: str | None, corpus_models: str | None) -> list[Parent]:
    parents = builtin_parents()
    if models:
        wanted = {m.strip() for m in models.split(",") if m.strip()}
        unknown = wanted - {p.name for p in parents}
        if unknown:
            raise SystemExit(f"unknown built-in model(s): {', '.join(sorted(unknown))}")
        parents = [p for p in parents if p.name in wanted]
    names = [n.strip() for n in (corpus_models or "").split(",") if n.strip() and n.strip() != "none"]
    return parents + corpus_parents(names)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_check:
        return 0 if self_check(warm=not args.cold) else 1
    parents = select_parents(args.models, args.corpus_models)
    memory = int(args.memory_gib * GIB)
    if args.replay:
        gen = Generator(parents, args.seed)
        found = False
        with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-replay-") as tmp, \
                Runner(warm=False, timeout=args.timeout, memory=memory) as runner:
            for i in (int(x) for x in args.replay.split(",")):
                case = run_mutant(runner, gen.mutant(i), Path(tmp) / str(i))
                print(f"mutant {i} ({case.mutant.parent}): {'; '.join(case.mutant.mutations)}")
                for command, res in case.runs.items():
                    argv_ = case.mutant.compile_args if command == "compile" else case.mutant.analyze_args
                    print(f"  {command} {' '.join(argv_)}: exit {res.rc} signal {res.signal} "
                          f"timeout {res.timed_out} ({res.seconds:.2f} s)")
                    for ln in res.stderr.splitlines()[-40:]:
                        print(f"    | {ln}")
                for p in case.problems:
                    print(f"  DEFECT {p.signature}")
                found |= bool(case.problems)
        return 1 if found else 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(p.name for p in parents)
    print(f"fuzz: {args.seconds:g} s, seed {args.seed}, {'cold' if args.cold else 'warm'} children, "
          f"models: {names}", flush=True)
    stats = fuzz(seconds=args.seconds, seed=args.seed, parents=parents, out=out, workers=args.workers,
                 warm=not args.cold, timeout=args.timeout, memory=memory, max_mutants=args.max_mutants,
                 log=lambda s: print(s, flush=True))
    for line in summary(stats, args.seed):
        print(line)
    summary_file = out / "summary.json"
    summary_file.write_text(json.dumps({
        "seed": args.seed, "mutants": stats.mutants, "runs": stats.runs, "seconds": round(stats.seconds, 2),
        "outcomes": dict(stats.outcomes),
        "notes": {k: {"count": n, "first": stats.note_first[k]} for k, n in stats.notes.items()},
        "defects": {sig: {"count": len(seen), "mutants": seen[:20], "confirmed_cold": stats.confirmed.get(sig)}
                    for sig, seen in stats.signatures.items()},
    }, indent=2) + "\n")
    if stats.signatures:
        print(f"cases saved under {out}/ (replay one with --seed {args.seed} --replay INDEX)")
    return 1 if stats.signatures else 0


if __name__ == "__main__":
    sys.exit(main())
