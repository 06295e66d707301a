"""Loading and saving models safely.

* :func:`load` validates before anything else runs: the file exists and parses as a ModelProto,
  the IR version and opsets are supported, the checker accepts it, every external-data reference
  stays inside the model's folder and inside its file, and the graph is acyclic with every input
  defined. Failures raise :class:`~onnxforge.errors.ModelError` (or ``UsageError`` for paths) with
  a one-line message.
* :func:`save` writes atomically (temporary files in the target folder, then ``os.replace``),
  never over the input model, and switches to external data automatically when the tensors would
  not fit in one 2 GB protobuf. External tensors are streamed from the source file, never loaded
  whole.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from onnxforge.errors import ModelError, UsageError
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.tensor_data import TensorStore, is_external, iter_tensors

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


def read_proto(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse a model file (without external data) with one-line errors."""
    p = Path(path)
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
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"{p} is not a valid ONNX model (protobuf parse failed: {_short(e)})") from None
    return proto


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


def load(
    model: str | os.PathLike[str] | onnx.ModelProto | Model, *, check: bool = True
) -> LoadedModel:
    """Load a model from a path, a ModelProto or an existing IR model.

    External data is not read: tensors are memory-mapped on first use. A ModelProto passed in is
    never modified.
    """
    if isinstance(model, Model):
        return LoadedModel(model, None, False)
    path: Path | None = None
    if isinstance(model, onnx.ModelProto):
        proto = model
        where = "model"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        proto = read_proto(path)
        where = str(path)
    else:
        raise UsageError(f"cannot load a model from {type(model).__name__}")
    store = TensorStore(path.parent if path is not None else None)
    uses_external = any(is_external(t) for t in iter_tensors(proto))
    if uses_external:
        store.validate_all(proto)  # our rules are stricter than the checker's: run them first
    recheck = check and not check_proto(proto, where, path)
    ir_model = from_proto(proto)
    ir_model.tensor_store = store
    ir_model.export_value_info = _has_value_info(proto.graph)
    try:
        ir_model.graph.toposort()
        for g in ir_model.graph.all_graphs():
            if g is not ir_model.graph:
                g.toposort()
    except ValueError as e:
        raise ModelError(f"{where}: {e}") from None
    if recheck:  # the graph was out of order: check the sorted version
        log.info("%s: nodes were not in topological order; sorted them", where)
        check_proto(to_proto(ir_model), where, None if uses_external else path)
    ir_model.reset_version()
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
                if e.key == "length":
                    total += int(e.value)
        else:
            total += t.ByteSize()
    return total


def check_output_path(out: Path, source: str | os.PathLike[str] | None = None) -> Path:
    """Refuse an output path that is the input model, a folder, or in a missing or read-only
    folder (:class:`UsageError`); returns the output's folder. Callers run this before any work."""
    if source is not None and _same_file(Path(source), out):
        raise UsageError(f"output path {out} is the input model; choose another path (the input is never modified)")
    if out.is_dir():
        raise UsageError(f"output path {out} is a folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output folder {parent} is not writable")
    return parent


def save(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
    store: TensorStore | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    ``external_data``: True forces a ``<name>.data`` file beside the model, False forbids it (and
    fails for models over 2 GB), None decides by size and by whether the source used it.
    ``source`` is the input model's path: writing over it is refused.
    """
    out = Path(path)
    parent = check_output_path(out, source)
    if isinstance(model, Model):
        store = store or model.tensor_store
        proto = to_proto(model)
    else:
        proto = model
    size = total_tensor_bytes(proto)
    has_external = any(is_external(t) for t in iter_tensors(proto))
    if external_data is None:
        external_data = has_external or size > EMBED_LIMIT
    elif not external_data and size > EMBED_LIMIT:
        raise UsageError(f"model tensors take {size / 2**30:.2f} GiB: too large to embed; allow external data")
    tmp_files: list[Path] = []
    try:
        data_name = out.name + ".data"
        if external_data:
            fd, tmp_data = tempfile.mkstemp(prefix=".onnxforge-", suffix=".data.tmp", dir=parent)
            tmp_files.append(Path(tmp_data))
            with os.fdopen(fd, "wb") as f:
                _write_external(proto, f, data_name, store)
        elif has_external:
            _embed_external(proto, store)
        fd, tmp_model = tempfile.mkstemp(prefix=".onnxforge-", suffix=".onnx.tmp", dir=parent)
        tmp_files.append(Path(tmp_model))
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        if external_data:
            os.replace(tmp_files[0], parent / data_name)
        os.replace(tmp_model, out)
        tmp_files.clear()
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    except ValueError as e:
        raise ModelError(f"cannot serialize the model: {_short(e)}") from None
    finally:
        for t in tmp_files:
            try:
                t.unlink()
            except OSError:
                pass
    log.info("wrote %s%s", out, f" (+ {out.name}.data)" if external_data else "")
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        if b.exists() and a.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


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
