"""Access to initializer bytes, embedded or in external-data files, without loading what is not
needed.

External data is validated before any byte is read: the location must be a relative path inside
the model's folder (no ``..``, no absolute path, no symlink escaping the folder), and
``offset + length`` must lie inside the file. Data is memory-mapped, so a pass that looks at
one tensor of a 2.5 GB model touches only that tensor's pages.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.errors import ModelError, UnsafeExternalDataError


def is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def external_info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


class TensorStore:
    """Resolves external tensors relative to ``base_dir`` (the input model's folder)."""

    def __init__(self, base_dir: str | os.PathLike[str] | None) -> None:
        self.base_dir = Path(base_dir).resolve() if base_dir is not None else None
        self._maps: dict[Path, tuple[mmap.mmap, int]] = {}
        #: Real paths of the files the model was read from: the model file first, then its
        #: external-data files. Saving refuses to replace any of them (set by ``modelio.load``).
        self.source_files: tuple[Path, ...] = ()

    def resolve(self, t: onnx.TensorProto) -> tuple[Path, int, int]:
        """Validate a tensor's external reference; returns (file, offset, length)."""
        info = external_info(t)
        loc = info.get("location", "")
        if not loc:
            raise ModelError(f"tensor {t.name!r} is marked external but names no location")
        if "\0" in loc:
            raise ModelError(f"tensor {t.name!r}: external data path {loc!r} contains a NUL character")
        if self.base_dir is None:
            raise ModelError(
                f"tensor {t.name!r} uses external data {loc!r} but the model was not loaded from a file"
            )
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            raise UnsafeExternalDataError(f"tensor {t.name!r}: external data path {loc!r} is absolute")
        parts = Path(loc).parts
        if ".." in parts:
            raise UnsafeExternalDataError(f"tensor {t.name!r}: external data path {loc!r} leaves the model folder")
        path = (self.base_dir / loc).resolve()
        try:
            path.relative_to(self.base_dir)
        except ValueError:
            raise UnsafeExternalDataError(
                f"tensor {t.name!r}: external data path {loc!r} resolves outside the model folder"
            ) from None
        if not path.is_file():
            raise ModelError(f"tensor {t.name!r}: external data file {loc!r} is missing")
        size = path.stat().st_size
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise ModelError(f"tensor {t.name!r}: external data offset/length are not integers") from None
        expected = _expected_nbytes(t)
        if expected is not None and "length" not in info:
            length = expected
        if offset < 0 or length < 0 or offset + length > size:
            raise UnsafeExternalDataError(
                f"tensor {t.name!r}: external data [{offset}, {offset + length}) lies past the end of "
                f"{loc!r} ({size} bytes)"
            )
        if expected is not None and length != expected:
            raise ModelError(f"tensor {t.name!r}: external data has {length} bytes, its shape needs {expected}")
        return path, offset, length

    def _map(self, path: Path) -> mmap.mmap | None:
        entry = self._maps.get(path)
        if entry is None:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return None
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[path] = (mm, size)
            return mm
        return entry[0]

    def read_bytes(self, t: onnx.TensorProto) -> memoryview:
        """The raw little-endian bytes of an external tensor (a view on the mapped file)."""
        path, offset, length = self.resolve(t)
        if length == 0:
            return memoryview(b"")
        mm = self._map(path)
        assert mm is not None
        return memoryview(mm)[offset : offset + length]

    def iter_chunks(self, t: onnx.TensorProto, chunk: int = 16 << 20) -> Iterator[bytes]:
        """Stream an external tensor's bytes with plain reads (no mapping, so the pages do not
        count towards this process's resident memory)."""
        path, offset, length = self.resolve(t)
        with open(path, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                block = f.read(min(chunk, left))
                if not block:
                    raise ModelError(f"tensor {t.name!r}: external data file {path.name!r} ended early")
                left -= len(block)
                yield block

    def to_array(self, t: onnx.TensorProto) -> np.ndarray:
        """Tensor as numpy; external data is memory-mapped read-only, not copied."""
        if not is_external(t):
            return numpy_helper.to_array(t)
        raw = self.read_bytes(t)
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        if t.data_type in (
            onnx.TensorProto.INT4,
            onnx.TensorProto.UINT4,
            onnx.TensorProto.STRING,
        ) or dtype.itemsize == 0:
            # Rare layouts: let onnx decode a copy.
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.ClearField("external_data")
            copy.data_location = onnx.TensorProto.DEFAULT
            copy.raw_data = bytes(raw)
            return numpy_helper.to_array(copy)
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
        return arr.reshape(tuple(t.dims))

    def validate_all(self, model: onnx.ModelProto) -> None:
        """Check every external reference of a model (all graphs) before any pass runs."""
        for t in iter_tensors(model):
            if is_external(t):
                self.resolve(t)

    def close(self) -> None:
        for mm, _ in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a numpy view still refers to it; the GC will close it
                pass
        self._maps.clear()


def _expected_nbytes(t: onnx.TensorProto) -> int | None:
    if t.data_type == onnx.TensorProto.STRING:
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        return None
    n = 1
    for d in t.dims:
        n *= d
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    if t.data_type in (getattr(onnx.TensorProto, "FLOAT4E2M1", -1),):
        return (n + 1) // 2
    return n * itemsize


def iter_tensors(
    model: onnx.ModelProto, *, initializers: bool = True, attributes: bool = True
) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a model: initializers and sparse initializers (of every graph), and
    attribute tensors (Constant values, in graphs and functions). Choose the kinds with the flags.
    """

    def from_graph(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        if initializers:
            yield from g.initializer
            for st in g.sparse_initializer:
                yield st.values
                yield st.indices
        for n in g.node:
            yield from from_attrs(n.attribute)

    def from_attrs(attrs) -> Iterator[onnx.TensorProto]:  # type: ignore[no-untyped-def]
        for a in attrs:
            if attributes:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
            if a.HasField("g"):
                yield from from_graph(a.g)
            for sg in a.graphs:
                yield from from_graph(sg)

    yield from from_graph(model.graph)
    if not attributes:
        return
    for f in model.functions:
        for n in f.node:
            yield from from_attrs(n.attribute)


def pack_nibbles(values: np.ndarray) -> bytes:
    """4-bit values two per byte, the first in the low nibble (an odd count ends with a zero
    nibble): the layout of ONNX's uint4/int4 tensors (and of Huffman code lengths in
    :mod:`onnxforge.ir.huffman`)."""
    v = np.asarray(values, np.uint8).ravel()
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.uint8)])
    return ((v[0::2] & 0x0F) | ((v[1::2] & 0x0F) << 4)).astype(np.uint8).tobytes()


def unpack_nibbles(data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """The 4-bit values of :func:`pack_nibbles`' bytes (two per byte, low nibble first)."""
    b = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    out = np.empty(b.size * 2, np.uint8)
    out[0::2] = b & 0x0F
    out[1::2] = b >> 4
    return out
