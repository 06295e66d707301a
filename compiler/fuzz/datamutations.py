"""Mutations of a model's data: tensor payloads that disagree with their type or dims, weights
set to edge values, external data references and files, and byte-level damage to the
serialized model."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxforge.fuzz.casefiles import DATA, MODEL, Folder, Symlink
from onnxforge.fuzz.mutations import INTS, NotApplicable, _pick
from onnxforge.fuzz.parents import Parent
from onnxforge.fuzz.protowalk import _tensors

LOCATIONS = ("../" + DATA, "/etc/hostname", "", "missing.bin", "sub/" + DATA, ".", MODEL, DATA + "/", "//" + DATA,
             "link.bin", "dir", "\x00" + DATA)


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
