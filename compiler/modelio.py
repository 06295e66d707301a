"""Loading and saving models safely.

* :func:`load` reads ``.onnx`` files and ``.onnxz`` archives (:mod:`onnxforge.ir.archive`, told
  apart by their first bytes) and validates before anything else runs: the file exists and parses as a ModelProto,
  the IR version and opsets are supported, the checker accepts it, every node's types satisfy its
  operator's type constraints (:func:`check_types`), every external-data reference stays inside
  the model's folder and inside its file, and the graph is acyclic with every input defined. Failures raise :class:`~onnxforge.errors.ModelError` (or ``UsageError`` for paths) with
  a one-line message.
* :func:`save` writes atomically (temporary files in the target folder, then ``os.replace``),
  never over the input model or any file it reads (:func:`check_output_paths`), and switches to external data automatically when the tensors would
  not fit in one 2 GB protobuf. External tensors are streamed from the source file, never loaded
  whole.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from onnxforge.errors import ModelError, UsageError
from onnxforge.ir import Model, archive, from_proto, tensor_nbytes, to_proto
from onnxforge.ir.onnx_inference import CRASHED, infer_shapes
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.tensor_data import TensorStore, external_info, is_external, iter_tensors
from onnxforge.progress import ProgressHook, Stage

log = logging.getLogger(__name__)

#: Protobuf cannot serialize messages of 2 GiB or more; keep a margin for the graph itself.
PROTOBUF_LIMIT = 2**31 - 1
EMBED_LIMIT = int(1.8 * 2**30)
#: Tensors at least this large go to the external file when saving with external data.
EXTERNAL_THRESHOLD = 1024
_ALIGN = 4096
_PACKED_TYPES = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4, getattr(onnx.TensorProto, "FLOAT4E2M1", -1)}


@dataclass
class LoadedModel:
    """What :func:`load` returns: the IR plus where it came from."""

    model: Model
    path: Path | None
    uses_external_data: bool


#: One parsed proto that :func:`input_files` read ahead for the next :func:`read_proto` of the
#: same unchanged file (keyed by real path, device, inode, size and mtime).
_read_ahead: tuple[tuple[object, ...], onnx.ModelProto] | None = None
_read_ahead_lock = threading.Lock()


def _file_key(p: Path) -> tuple[object, ...] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (_real(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_proto(path: str | os.PathLike[str], *, keep: bool = False) -> onnx.ModelProto:
    """Parse a model file (without external data) with one-line errors.

    ``keep``: also hold the result for the next call on the same unchanged file, which takes it
    (the caller of a ``keep`` read must not modify the proto)."""
    global _read_ahead
    p = Path(path)
    key = _file_key(p)
    with _read_ahead_lock:
        if _read_ahead is not None and key is not None and _read_ahead[0] == key:
            proto = _read_ahead[1]
            if not keep:
                _read_ahead = None
            return proto
    proto = _parse_file(p)
    if keep and key is not None:
        with _read_ahead_lock:
            _read_ahead = (key, proto)
    return proto


def _parse_file(p: Path) -> onnx.ModelProto:
    if not p.exists():
        raise UsageError(f"model file not found: {p}")
    if p.is_dir():
        raise UsageError(f"model path is a folder, not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror or e}") from None
    if not data:
        raise ModelError(f"{p} is empty, not an ONNX model")
    if archive.is_archive(data):  # an .onnxz archive: its model, decoded in memory
        try:
            proto = archive.unpack(data)
        except archive.ArchiveError as e:
            raise ModelError(f"{p}: {e}") from None
        check_text(proto, str(p))
        return proto
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"{p} is not a valid ONNX model (protobuf parse failed: {_short(e)})") from None
    check_text(proto, str(p))
    return proto


def check_text(proto: onnx.ModelProto, where: str = "model") -> None:
    """Refuse (:class:`ModelError`) a string field that is not UTF-8. protobuf parses such a
    field without complaint and hands it back as ``bytes``, which then fails wherever it is
    used (a path join, an export of the name). Bytes fields (tensor data) are not read."""
    bad = _undecodable(proto, "")
    if bad is not None:
        raise ModelError(f"{where} is not a valid ONNX model: {bad or 'a string'} is not valid UTF-8 text")


def _undecodable(msg, path: str) -> str | None:  # type: ignore[no-untyped-def]
    for fd in msg.DESCRIPTOR.fields:
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if fd.type == fd.TYPE_STRING:
            value = getattr(msg, fd.name)
            for i, v in enumerate(value if repeated else [value]):
                if isinstance(v, bytes):
                    return f"{path}{fd.name}" + (f"[{i}]" if repeated else "")
        elif fd.type == fd.TYPE_MESSAGE:
            if repeated:
                subs = [(f"[{k}]", sub) for k, sub in enumerate(getattr(msg, fd.name))]
            else:
                subs = [("", getattr(msg, fd.name))] if msg.HasField(fd.name) else []
            for where, sub in subs:
                found = _undecodable(sub, f"{path}{fd.name}{where}.")
                if found is not None:
                    return found
    return None


def check_proto(proto: onnx.ModelProto, where: str = "model", path: Path | None = None) -> bool:
    """Reject models onnxforge cannot process safely, with a one-line reason.

    Returns False when the only complaint is node order (the loader sorts, then checks again).
    """
    if not proto.HasField("graph"):
        raise ModelError(f"{where} has no graph: not an ONNX model (wrong message type or damaged file)")
    if proto.ir_version < 3:
        raise ModelError(f"{where} has unsupported IR version {proto.ir_version} (onnxforge needs 3 or newer)")
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelError(
            f"{where} has IR version {proto.ir_version}, newer than this onnx supports ({onnx.IR_VERSION})"
        )
    max_opset = onnx.defs.onnx_opset_version()
    seen_default = False
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            seen_default = True
            if imp.version < 1 or imp.version > max_opset:
                raise ModelError(f"{where} imports opset {imp.version} of the default domain (supported: 1..{max_opset})")
    if not seen_default and any(n.domain in ("", "ai.onnx") for n in proto.graph.node):
        raise ModelError(f"{where} uses standard ops but imports no opset of the default domain")
    _check_data_types(proto, where)
    try:
        # With external data the checker must resolve files against the model's folder.
        if path is not None and any(is_external(t) for t in iter_tensors(proto)):
            onnx.checker.check_model(str(path), full_check=False)
        else:
            onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as e:
        if "topologically sorted" in str(e):
            return False
        raise ModelError(f"{where} is not a valid ONNX model: {_short(e)}") from None
    except Exception as e:  # the checker raises assorted C++ errors on damaged protos
        raise ModelError(f"{where} is not a valid ONNX model: {_short(e)}") from None
    return True


#: Embedded tensors above this size are replaced by typed stubs (type and dims, no data) in the
#: copy the type check runs on: inference reads only small, shape-like tensors.
_STUB_BYTES = 1 << 16
_NODE_TAG = "onnxforge-node-"
#: What onnx's operator type check (OpSchema::CheckInputOutputType) says about a bad type.
_TYPE_CONSTRAINT = re.compile(r"has (unsupported|inconsistent) type|expected to have type but instead is null")


#: Element types this onnx knows (UNDEFINED excluded).
_KNOWN_TYPES = frozenset(v for v in onnx.TensorProto.DataType.values() if v != onnx.TensorProto.UNDEFINED)
#: Typed fields of a TensorProto, by the element types stored in them.
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def check_tensor_sizes(proto: onnx.ModelProto, where: str = "model") -> None:
    """Refuse (:class:`ModelError`, one line) a tensor whose embedded data does not hold the
    number of elements its dims say: onnx's checker lets that through and every consumer then
    reads garbage or fails (a cleared ``dims`` made a weight a scalar with 8 values). External
    data is checked by :class:`~onnxforge.ir.tensor_data.TensorStore`; sparse tensors and
    sub-byte types in typed fields are left to the checker."""
    for t in iter_tensors(proto):
        if is_external(t) or t.data_type not in _KNOWN_TYPES:
            continue  # an unknown type is refused by check_proto, with its own message
        count = 1
        for d in t.dims:
            count *= d
        if t.HasField("raw_data"):
            want = tensor_nbytes(t)
            if t.data_type != onnx.TensorProto.STRING and len(t.raw_data) != want:
                raise ModelError(
                    f"{where}: tensor {t.name or '(unnamed)'!r} holds {len(t.raw_data)} bytes but its dims "
                    f"{list(t.dims)} and type need {want}"
                )
            continue
        present = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
        if len(present) != 1 or t.data_type in _PACKED_TYPES:
            continue
        n = len(getattr(t, present[0]))
        if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            n //= 2  # real and imaginary parts side by side
        if n != count:
            raise ModelError(
                f"{where}: tensor {t.name or '(unnamed)'!r} holds {n} values but its dims {list(t.dims)} say {count}"
            )


def check_types(proto: onnx.ModelProto, where: str = "model") -> None:
    """Refuse (:class:`ModelError`) a node whose input or output types break its operator's type
    constraints, e.g. ``Add(float, int64)``, in one line naming the node (name and position),
    the op and the types.

    onnx type inference runs with ``check_type=True`` but not in strict mode and without data
    propagation: other inference complaints (shapes that disagree with stale ``value_info``,
    ops of domains onnx does not know) stay onnxruntime's to judge. It runs on a copy of the
    graph whose weights above 64 KB are stubs, so its cost does not grow with the weights, and
    models with external data or over 2 GB are checked too without reading a byte of them.
    """
    slim, nodes = _typing_copy(proto)
    infer = infer_shapes  # onnx's, in a child: some invalid models make it abort the process
    try:
        infer(slim, check_type=True, strict_mode=False, data_prop=False)
        if any("/" in key for key, _ in nodes):
            # Outside strict mode, errors in subgraphs (If/Loop/Scan bodies) are swallowed; in
            # strict mode they come with everything else: keep only type-constraint errors.
            try:
                infer(slim, check_type=True, strict_mode=True, data_prop=False)
            except onnx.shape_inference.InferenceError as e:
                if _TYPE_CONSTRAINT.search(str(e)):
                    raise
                log.debug("%s: strict inference complains, not about types: %s", where, _short(e))
    except onnx.shape_inference.InferenceError as e:
        raise ModelError(_type_error(e, slim, nodes, where)) from None
    except (ValueError, RuntimeError) as e:  # not a verdict on the model: leave it to the loader
        log.debug("%s: type check skipped: %s", where, _short(e))


def _typing_copy(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[tuple[str, onnx.NodeProto]]]:
    """The model for type inference: weights stubbed, every node of every graph renamed to a tag
    (so an error names it even when it has no name); returns the copy and, by tag number, each
    node's position (``3``, ``3/then_branch/0``) and original."""
    slim = onnx.ModelProto()
    slim.ir_version = proto.ir_version
    slim.opset_import.extend(proto.opset_import)
    slim.functions.extend(proto.functions)
    nodes: list[tuple[str, onnx.NodeProto]] = []
    _typing_graph(proto.graph, slim.graph, "", nodes)
    return slim, nodes


def _typing_graph(src: onnx.GraphProto, dst: onnx.GraphProto, prefix: str, nodes: list[tuple[str, onnx.NodeProto]]) -> None:
    dst.name = src.name
    dst.input.extend(src.input)
    dst.output.extend(src.output)
    dst.value_info.extend(src.value_info)
    dst.sparse_initializer.extend(src.sparse_initializer)
    for t in src.initializer:
        _typing_tensor(t, dst.initializer.add())
    for i, n in enumerate(src.node):
        key = f"{prefix}{i}"
        new = dst.node.add()
        new.op_type, new.domain, new.name = n.op_type, n.domain, f"{_NODE_TAG}{len(nodes)}"
        new.input.extend(n.input)
        new.output.extend(n.output)
        if n.overload:
            new.overload = n.overload
        nodes.append((key, n))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                na = new.attribute.add(name=a.name, type=a.type)
                _typing_graph(a.g, na.g, f"{key}/{a.name}/", nodes)
            elif a.type == onnx.AttributeProto.GRAPHS:
                na = new.attribute.add(name=a.name, type=a.type)
                for j, sg in enumerate(a.graphs):
                    _typing_graph(sg, na.graphs.add(), f"{key}/{a.name}[{j}]/", nodes)
            elif a.type == onnx.AttributeProto.TENSOR:
                _typing_tensor(a.t, new.attribute.add(name=a.name, type=a.type).t)
            else:
                new.attribute.add().CopyFrom(a)


def _typing_tensor(t: onnx.TensorProto, dst: onnx.TensorProto) -> None:
    # Size from the dims: ByteSize() would serialize the data to measure it.
    if is_external(t) or math.prod(t.dims) * 8 <= _STUB_BYTES or t.data_type == onnx.TensorProto.STRING:
        dst.CopyFrom(t)
        return
    dst.name, dst.data_type = t.name, t.data_type
    dst.dims.extend(t.dims)
    dst.data_location = onnx.TensorProto.EXTERNAL
    dst.external_data.add(key="location", value="onnxforge-type-check-stub")


def _type_error(e: Exception, slim: onnx.ModelProto, nodes: list[tuple[str, onnx.NodeProto]], where: str) -> str:
    text = " ".join(str(e).split())
    if text.startswith(CRASHED):  # not a verdict on types: the shapes are beyond what onnx survives
        return f"{where} is not a valid ONNX model: {text} (a negative or inconsistent dimension?)"
    # (op_type:Add, node name: onnxforge-node-3): B has inconsistent type tensor(int64) -- one
    # or more of them, nested for subgraphs: take the first that is about types.
    found = []
    for m in re.finditer(r"node name: " + _NODE_TAG + r"(\d+)\):\s*", text):
        detail = re.split(r" \(op_type:| \[", text[m.end() :], maxsplit=1)[0].strip().rstrip(".")
        if int(m.group(1)) < len(nodes) and detail:
            found.append((int(m.group(1)), detail))
    if not found:
        return f"{where}: a node breaks its operator's type constraints: {_short(e)}"
    index, detail = next(((i, d) for i, d in found if _TYPE_CONSTRAINT.search(d)), found[-1])
    key, node = nodes[index]
    label = f"node {key}" + (f" {node.name!r}" if node.name else "") + f" ({node.op_type})"
    return f"{where}: {label} breaks the operator's type constraints: {detail}; {_io_types(slim, node)}"


def _io_types(slim: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """``inputs: x float, i int64; outputs: y ?``, from (non-checking) inference on ``slim``."""
    try:
        inferred = infer_shapes(slim, strict_mode=False, data_prop=False)
    except Exception:
        inferred = slim
    types: dict[str, str] = {}
    for g in graph_protos(inferred.graph):
        for vi in itertools.chain(g.input, g.value_info, g.output):
            types.setdefault(vi.name, _type_name(vi.type))
        for t in g.initializer:
            types.setdefault(t.name, onnx.TensorProto.DataType.Name(t.data_type).lower())

    def names(values: Sequence[str]) -> str:
        return ", ".join(f"{v} {types.get(v, '?')}" for v in values if v) or "none"

    return f"inputs: {names(node.input)}; outputs: {names(node.output)}"


def _type_name(t: onnx.TypeProto) -> str:
    kind = t.WhichOneof("value")
    if kind == "tensor_type" or kind == "sparse_tensor_type":
        elem = getattr(t, kind).elem_type
        name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "?"
        return name if kind == "tensor_type" else f"sparse {name}"
    if kind == "sequence_type":
        return f"seq({_type_name(t.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_name(t.optional_type.elem_type)})"
    if kind == "map_type":
        return f"map({onnx.TensorProto.DataType.Name(t.map_type.key_type).lower()}, {_type_name(t.map_type.value_type)})"
    return "?"


_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())


def _check_data_types(proto: onnx.ModelProto, where: str) -> None:
    """Tensor and value element types must be ones onnx knows (the checker lets e.g. -1 or
    65535 through, and reading such a tensor then fails)."""
    for t in iter_tensors(proto):
        if t.data_type not in _DATA_TYPES or t.data_type == onnx.TensorProto.UNDEFINED:
            raise ModelError(f"{where} is not a valid ONNX model: tensor {t.name!r} has unknown data type {t.data_type}")
    for g in graph_protos(proto.graph):
        for vi in itertools.chain(g.input, g.output, g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type not in _DATA_TYPES:
                raise ModelError(
                    f"{where} is not a valid ONNX model: value {vi.name!r} has unknown element type "
                    f"{vi.type.tensor_type.elem_type}"
                )


def load(
    model: str | os.PathLike[str] | onnx.ModelProto | Model, *, check: bool = True, progress: ProgressHook | None = None
) -> LoadedModel:
    """Load a model from a path, a ModelProto or an existing IR model.

    External data is not read: tensors are memory-mapped on first use. A ModelProto passed in is
    never modified. ``progress`` receives the ``"load"`` stage's steps (reading, checking,
    building the IR, sorting).
    """
    if isinstance(model, Model):
        return LoadedModel(model, None, False)
    with Stage(progress, "load", "loading model", unit="steps", total=_LOAD_STEPS) as stage:
        return _load(model, check, stage)


#: The steps :func:`load` reports: read and parse, check, build the IR, sort.
_LOAD_STEPS = 4


def _load(model: str | os.PathLike[str] | onnx.ModelProto, check: bool, stage: Stage) -> LoadedModel:
    path: Path | None = None
    if isinstance(model, onnx.ModelProto):
        proto = model
        where = "model"
        if check:
            check_text(proto, where)  # read_proto does it for files
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        stage.describe(f"loading {path.name}: reading")
        proto = read_proto(path)
        where = str(path)
    else:
        raise UsageError(f"cannot load a model from {type(model).__name__}")
    name = path.name if path is not None else "model"
    stage.step(1, f"loading {name}: checking")
    store = TensorStore(path.parent if path is not None else None)
    uses_external = any(is_external(t) for t in iter_tensors(proto))
    if uses_external:
        store.validate_all(proto)  # our rules are stricter than the checker's: run them first
    if check:
        check_tensor_sizes(proto, where)
    recheck = check and not check_proto(proto, where, path)
    if check and not recheck:
        check_types(proto, where)
    stage.step(2, f"loading {name}: building the IR")
    ir_model = from_proto(proto)
    if path is not None:
        store.source_files = _files_of(proto, path)
    ir_model.tensor_store = store
    ir_model.export_value_info = _has_value_info(proto.graph)
    stage.step(3, f"loading {name}: sorting")
    try:
        ir_model.graph.toposort()
        for g in ir_model.graph.all_graphs():
            if g is not ir_model.graph:
                g.toposort()
    except ValueError as e:
        raise ModelError(f"{where}: {e}") from None
    if recheck:  # the graph was out of order: check the sorted version
        log.info("%s: nodes were not in topological order; sorted them", where)
        sorted_proto = to_proto(ir_model)
        if not check_proto(sorted_proto, where, None if uses_external else path):
            # Only graphs are sorted: a function body out of order (or cyclic) stays so, and
            # would be written out invalid.
            raise ModelError(f"{where} is not a valid ONNX model: nodes are not in topological order even "
                             "after sorting the graphs (a cycle, or a function body out of order)")
        check_types(sorted_proto, where)
    ir_model.reset_version()
    stage.step(_LOAD_STEPS, f"loaded {name}")
    return LoadedModel(ir_model, path, uses_external)


def _has_value_info(g: onnx.GraphProto) -> bool:
    """True when the graph (or a subgraph) declares types of intermediate values."""
    return any(len(gp.value_info) for gp in graph_protos(g))


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def total_tensor_bytes(proto: onnx.ModelProto) -> int:
    total = 0
    for t in iter_tensors(proto):
        if is_external(t):
            for e in t.external_data:
                if e.key == "length" and e.value:  # empty: no length given, as the loader reads it
                    total += int(e.value)
        else:
            total += t.ByteSize()
    return total


# --------------------------------------------------------------------------------------------
# Output safety: no output may replace a file the input reads
# --------------------------------------------------------------------------------------------
#: The names DumpInstrument gives its files: ``NNN_<pass>.onnx`` (and their ``.data``).
DUMP_NAME = re.compile(r"^\d{3,}_.+\.onnx(\.data)?$")


def input_files(source: str | os.PathLike[str], *, keep: bool = False) -> tuple[Path, ...]:
    """Real paths of a model file (first) and of every external-data file it names: the files
    an output must never replace. With ``keep`` the parsed proto is handed to the next
    :func:`load` of the same unchanged file, so checking before the work costs no second parse."""
    p = Path(source)
    return _files_of(read_proto(p, keep=keep), p)


def _files_of(proto: onnx.ModelProto, path: Path) -> tuple[Path, ...]:
    files = {_real(path): None}
    for t in iter_tensors(proto):
        if is_external(t):
            loc = external_info(t).get("location")
            if loc and "\0" not in loc:  # a NUL names no file (and the loader refuses it)
                files.setdefault(_real(path.parent / loc), None)
    return tuple(files)


def _describe_inputs(files: Sequence[Path]) -> dict[Path, str]:
    """Real path -> what it is, for error messages (the first file is the model)."""
    return {f: "the input model" if i == 0 else f"the input's external data file {f.name}" for i, f in enumerate(files)}


def output_target(path: str | os.PathLike[str]) -> Path:
    """The file a write to ``path`` replaces: outputs are written through symlinks."""
    return _real(path)


def _real(p: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(p))


def _same_file(a: Path, b: Path) -> bool:
    """Same file by real path, or by (device, inode) so hard links are caught too."""
    if _real(a) == _real(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _check_target(path: Path, label: str, inputs: Mapping[Path, str], taken: Mapping[Path, str] | None = None) -> Path:
    """The real file a write to ``path`` replaces (a symlink is written through, so its target),
    after refusing folders, missing or read-only folders, files the input reads and files another
    output of the same run takes (:class:`UsageError`)."""
    target = _real(path)
    via = "" if target == Path(os.path.abspath(path)) else f" (which resolves to {target})"
    if target.is_dir():
        raise UsageError(f"{label} path {path}{via} is a folder")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{label} folder {parent} {'is not a folder' if parent.exists() else 'does not exist'}")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{label} folder {parent} is not writable")
    for f, what in inputs.items():
        if _same_file(target, f):
            raise UsageError(f"{label} path {path}{via} is {what}; choose another path (the input is never modified)")
    for f, what in (taken or {}).items():
        if _same_file(target, f):
            raise UsageError(f"{label} path {path}{via} is also the {what}; choose another path")
    return target


def _data_target(
    out: Path, target: Path, inputs: Mapping[Path, str], taken: Mapping[Path, str] | None, *, writing: bool, label: str
) -> Path:
    """The external-data file of a model written to ``target``: ``<target name>.data`` beside it.

    A reader resolves data locations against the folder of the path it opened, the link ``out``
    or its ``target``: when writing external data, both must be in one folder, and a symlinked
    data file may not leave it (readers refuse that)."""
    data = target.parent / (target.name + ".data")
    if writing and _real(out.parent) != target.parent:
        raise UsageError(
            f"{label} path {out} links into another folder ({target.parent}): its external data would not be "
            f"found from both places; write to {target} directly or embed the weights"
        )
    data_target = _check_target(data, f"{label} data file", inputs, taken)
    if writing and data_target.parent != target.parent:
        raise UsageError(f"{label} data file {data} links out of its folder (to {data_target}); readers would refuse it")
    return data_target


def check_output_path(
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    *,
    inputs: Sequence[Path] = (),
    external_data: bool | None = None,
    label: str = "output",
    taken: Mapping[Path, str] | None = None,
) -> Path:
    """Refuse (:class:`UsageError`) an output model path that is a folder, in a missing or
    read-only folder, or that would replace the ``source`` model or any of ``inputs`` (see
    :func:`input_files`) -- also through a symlink or a hard link -- directly or through its
    ``.data`` file (unless ``external_data`` is False). Returns the real path the model will be
    written to (symlinks are written through). Callers run this before any work."""
    out = Path(out)
    files = _describe_inputs(inputs)
    if source is not None and not files:
        files = _describe_inputs((_real(source),))
    target = _check_target(out, label, files, taken)
    if external_data is not False:
        _data_target(out, target, files, taken, writing=bool(external_data), label=label)
    return target


def check_output_paths(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    report: str | os.PathLike[str] | None = None,
    dump_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, ...]:
    """Check every path a compilation of ``source`` will write, before any work: the model, its
    data file, the report and the dump folder's files may not replace a file the input reads
    (its model file and external data, compared by real path and by device and inode) nor each
    other. Returns the input's files (:func:`input_files`), for the writes that follow."""
    inputs = input_files(source, keep=True)
    files = _describe_inputs(inputs)
    out = Path(output)
    if external_data is None and len(inputs) > 1:
        external_data = True  # the input uses external data, so will the output
    target = _check_target(out, "output", files)
    taken = {target: "output model"}
    if external_data is not False:
        taken[_data_target(out, target, files, taken, writing=bool(external_data), label="output")] = "output model's data file"
    if report is not None:
        _check_target(Path(report), "report", files, taken)
    if dump_dir is not None:
        check_dump_dir(dump_dir, inputs, taken)
    return inputs


def check_dump_dir(
    directory: str | os.PathLike[str], inputs: Sequence[Path], taken: Mapping[Path, str] | None = None
) -> None:
    """Refuse a ``--dump-ir`` folder that is a file, or that holds (links to) input files under
    names the dump would write. Each dump is checked again when written (:func:`save`)."""
    d = Path(directory)
    real = _real(d)
    if real.exists() and not real.is_dir():
        raise UsageError(f"dump folder {d} is a file, not a folder")
    if real.is_dir():
        files = _describe_inputs(inputs)
        for entry in sorted(real.iterdir()):
            if DUMP_NAME.match(entry.name):
                _check_target(entry, "dump file", files, taken)


def _inputs_of(source: str | os.PathLike[str] | None, store: TensorStore | None) -> dict[Path, str]:
    """The files an output may not replace: those of ``source`` and those ``store`` reads."""
    files: dict[Path, str] = {}
    if store is not None and store.source_files:
        files.update(_describe_inputs(store.source_files))
    if source is not None and _real(source) not in files:
        src = Path(source)
        files.update(_describe_inputs(input_files(src) if src.is_file() else (_real(src),)))
    return files


def _new_file_mode() -> int:
    """0666 minus the umask: the mode ``open()`` gives a new file (``mkstemp`` uses 0600)."""
    try:
        with open("/proc/self/status") as f:  # Linux: read the umask without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_file(folder: Path, suffix: str, mode: int) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(prefix=".onnxforge-", suffix=suffix, dir=folder)
    try:
        os.chmod(name, mode)
    except OSError:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def write_file_atomic(
    path: str | os.PathLike[str], data: bytes, *, inputs: Sequence[Path] = (), label: str = "output",
    taken: Mapping[Path, str] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file beside the target, then rename) with
    the usual new-file mode, writing through a symlink and refusing any of ``inputs``."""
    p = Path(path)
    target = _check_target(p, label, _describe_inputs(inputs), taken)
    tmp: Path | None = None
    try:
        fd, tmp = _temp_file(target.parent, ".tmp", _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise UsageError(f"cannot write {label} {p}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            _unlink(tmp)
    return target


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def save(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
    store: TensorStore | None = None,
    label: str = "output",
    before_write: Callable[[onnx.ModelProto, TensorStore | None], None] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (``label`` names the file in errors).

    ``external_data``: True forces a ``<name>.data`` file beside the model, False forbids it (and
    fails for models over 2 GB), None decides by size and by whether the source used it.
    ``source`` is the input model's path: writing over it or over any external-data file it
    reads is refused, as is writing over any file the model's tensor store reads. A symlinked
    ``path`` is written through (its target is replaced); files get the usual new-file mode
    (0666 minus the umask). The model and its data file are replaced as a pair: if the model's
    rename fails, the previous data file is put back. ``before_write(proto, store)`` runs once
    the paths are checked and before anything is written; it may refuse by raising (the
    compiler passes :func:`onnxforge.equivalence.check_runtime_loadable`).
    """
    out = Path(path)
    if isinstance(model, Model):
        store = store or model.tensor_store
    inputs = _inputs_of(source, store)
    target = _check_target(out, label, inputs)
    proto = to_proto(model) if isinstance(model, Model) else model
    size = total_tensor_bytes(proto)
    has_external = any(is_external(t) for t in iter_tensors(proto))
    if external_data is None:
        external_data = has_external or size > EMBED_LIMIT
    elif not external_data and size > EMBED_LIMIT:
        raise UsageError(f"model tensors take {size / 2**30:.2f} GiB: too large to embed; allow external data")
    data_target = _data_target(out, target, inputs, None, writing=True, label=label) if external_data else None
    if before_write is not None:
        before_write(proto, store)
    folder, mode = target.parent, _new_file_mode()
    tmp_files: list[Path] = []
    backup: Path | None = None
    data_replaced = done = False
    try:
        if data_target is not None:
            fd, tmp_data = _temp_file(folder, ".data.tmp", mode)
            tmp_files.append(tmp_data)
            with os.fdopen(fd, "wb") as f:
                _write_external(proto, f, data_target.name, store)
        elif has_external:
            _embed_external(proto, store)
        fd, tmp_model = _temp_file(folder, ".onnx.tmp", mode)
        tmp_files.append(tmp_model)
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        if data_target is not None:
            backup = _keep_previous(data_target)
            os.replace(tmp_files[0], data_target)
            data_replaced = True
        os.replace(tmp_model, target)
        done = True
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    except ValueError as e:
        raise ModelError(f"cannot serialize the model: {_short(e)}") from None
    finally:
        # Put the previous data file back when the new one replaced it, or when it was moved
        # aside (no hard links here) and the new one never arrived.
        if data_target is not None and not done and (data_replaced or (backup is not None and not data_target.exists())):
            _restore_previous(data_target, backup)
        if backup is not None:
            _unlink(backup)  # a hard link beside a restored or replaced file (gone if renamed back)
        if not done:
            for t in tmp_files:
                _unlink(t)
    log.info("wrote %s%s", out, f" (+ {data_target.name})" if data_target is not None else "")
    return out


def _keep_previous(path: Path) -> Path | None:
    """A second name for the file at ``path`` (a hard link, or the file itself moved), so it
    can be put back; None when there is none."""
    if not path.exists():
        return None
    backup = path.parent / f".onnxforge-{secrets.token_hex(8)}.bak"
    try:
        os.link(path, backup)
    except OSError:
        os.rename(path, backup)  # no hard links here: move it aside instead
    return backup


def _restore_previous(path: Path, backup: Path | None) -> None:
    try:
        if backup is None:
            path.unlink()
        else:
            os.rename(backup, path)
    except OSError as e:
        log.warning("could not restore %s after a failed write: %s", path, e.strerror or e)


def _write_external(proto: onnx.ModelProto, f, data_name: str, store: TensorStore | None) -> None:  # type: ignore[no-untyped-def]
    offset = 0
    # Initializers move out when large; attribute tensors stay embedded unless already external.
    initializers = iter_tensors(proto, attributes=False)
    external_attrs = (t for t in iter_tensors(proto, initializers=False) if is_external(t))
    for t in itertools.chain(initializers, external_attrs):
        if is_external(t):
            if store is None:
                raise ModelError(f"tensor {t.name!r} refers to external data but its source folder is unknown")
            chunks = store.iter_chunks(t)
        else:
            if t.data_type == onnx.TensorProto.STRING:
                continue
            if t.HasField("raw_data"):
                raw = t.raw_data
            elif t.data_type in _PACKED_TYPES:
                continue  # packed sub-byte types in typed fields: keep embedded
            else:
                raw = numpy_helper.to_array(t).tobytes()
            if len(raw) < EXTERNAL_THRESHOLD:
                continue
            chunks = iter([raw])
        pad = (-offset) % _ALIGN
        if pad:
            f.write(b"\0" * pad)
            offset += pad
        start = offset
        for block in chunks:
            f.write(block)
            offset += len(block)
        _set_external(t, data_name, start, offset - start)


def _set_external(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(field)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    t.external_data.add(key="offset", value=str(offset))
    t.external_data.add(key="length", value=str(length))


def _embed_external(proto: onnx.ModelProto, store: TensorStore | None) -> None:
    for t in iter_tensors(proto):
        if is_external(t):
            if store is None:
                raise ModelError(f"tensor {t.name!r} refers to external data but its source folder is unknown")
            raw = b"".join(store.iter_chunks(t))
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = raw
