"""The ``.onnxz`` archive: an ONNX model with entropy-coded tensors (docs/COMPRESSION.md).

:func:`pack` turns a ModelProto into archive bytes, :func:`unpack` gives the ModelProto back:
the same message (tensors stored in typed fields such as ``float_data`` come back in
``raw_data``, with the same values; external data comes back embedded). :func:`is_archive`
tells an archive from a model by its first bytes; :func:`onnxforge.modelio.load` reads either.

Layout (fixed integers little-endian, the rest LEB128 varints)::

    0   8 bytes   magic b"ONNXZ\x1a\r\n"
    8   u16       format version (2; version 1 archives are still read)
    10  u16       flags (0)
    12  u32       index length I
    16  I bytes   index (below)
    16+I          the coded tensors' blobs in index order, then the skeleton's

Index::

    skeleton:  codec (u8: 4 zlib, 5 xz), length, size, crc32 (u32)
    count
    count x    ref delta, codec (u8), transform (u8), length, size, crc32 (u32), codec parameters

``length`` bytes decode to ``size`` bytes whose CRC-32 is ``crc32``; a blob starts where the
one before it ended. The skeleton (``zlib`` or ``xz``, whichever is smaller) is the serialized
ModelProto with the data of every coded tensor left out. A tensor's ``ref`` is its position
among all tensors of the model, in the order of :func:`onnxforge.ir.tensor_data.iter_tensors`
(initializers and Constant values of every graph), written as its difference from the previous
entry's ref plus one (refs increase). ``transform`` 1 (``f16``): a float32 tensor whose every
value is exactly a float16 is coded as its float16 bytes (half the size) and widened back on
unpacking (per-channel scales and biases rounded to float16 precision by weight sharing). The
codecs (u8), their parameters after the CRC:

* 0 ``raw``: the bytes as they are (not written by this version: a
  tensor no codec shrinks stays in the skeleton, which is compressed as a whole).
* 1 ``huffman`` (parameter: planes, u8): the bytes cut into ``planes`` byte planes (byte ``i``
  of every element; one plane for 1-byte and packed 4-bit types), each a Huffman stream
  (:mod:`onnxforge.ir.huffman`) prefixed by its length as a LEB128 varint.
* 2 ``nibbles``: a packed 4-bit tensor (uint4/int4: codebook indices) as one Huffman stream of
  its 4-bit values, low nibble first; an odd count ends with a zero nibble in the last byte.
* 3 ``runs`` (parameters: zero, u8; unit, u8: 8, or 4 for the nibbles of a 4-bit tensor):
  symbols where one symbol ``zero`` dominates (the index of a pruned weight's exact 0): two
  Huffman streams, each prefixed by its LEB128 length. The first holds run tokens ``r``:
  0..254 = ``r`` zeros then the next value, 255 = 255 zeros and no value; the second the
  values (never ``zero``), in order. Zeros after the last value fill the tensor up to its size
  (Deep Compression's relative-index coding of sparse weights).
* 4 ``zlib``: deflate (small tensors with repeated patterns, such as shape constants).
* 5 ``xz``: LZMA2 (raw stream, no container; the filter ``{"id": FILTER_LZMA2, "preset": 6}``),
  tried on tensors up to 4 MB and on 1-byte tensors (index tables) up to 32 MB, whose repeats
  a Huffman code of single symbols cannot see.

Format 1 (read, not written) had a zlib-compressed JSON index with names and offsets, the
skeleton's blob last, and Huffman code lengths one byte each.

Every tensor above 64 bytes takes the codec that makes it smallest. A damaged archive (bad magic, version,
index, offsets, CRC, or a stream that does not decode) raises :class:`ArchiveError` with a
one-line reason; sizes are checked before anything is allocated.
"""

from __future__ import annotations

import functools
import json
import lzma
import math
import struct
import sys
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from onnxforge.errors import ModelError
from onnxforge.ir import huffman
from onnxforge.ir.tensor_data import TensorStore, is_external, iter_tensors, pack_nibbles, unpack_nibbles

MAGIC = b"ONNXZ\x1a\r\n"
VERSION = 2
#: Format versions :func:`unpack` reads.
READABLE = (1, 2)
SUFFIX = ".onnxz"
_HEADER = struct.Struct("<8sHHI")
#: Tensors of this size or less stay in the skeleton (their coding would cost more than it saves).
MIN_CODED_BYTES = 64
#: zlib is tried on tensors up to this size only (it is slow and loses to Huffman on weights).
#: xz (LZMA2) on tensors up to XZ_MAX_BYTES, and on 1-byte tensors (index tables) up to XZ_MAX_INDEX_BYTES.
XZ_MAX_BYTES = 4 << 20
XZ_MAX_INDEX_BYTES = 32 << 20
_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
ZLIB_MAX_BYTES = 1 << 20
_FOUR_BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
#: Codec ids of the format-2 index.
CODECS = ("raw", "huffman", "nibbles", "runs", "zlib", "xz")
#: Transform ids: how the coded bytes relate to the tensor's.
TRANSFORMS = (None, "f16")
_DATA_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


class ArchiveError(ModelError):
    """A file that claims to be an archive but cannot be read as one."""


def is_archive(head: bytes) -> bool:
    """Whether bytes (at least the first 8 of a file) start an ``.onnxz`` archive."""
    return head[: len(MAGIC)] == MAGIC


# --------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------
def _tensor_bytes(t: onnx.TensorProto, store: TensorStore | None) -> bytes | None:
    """The little-endian raw bytes of a numeric tensor (None: leave it in the skeleton)."""
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    if is_external(t):
        if store is None:
            return None
        return bytes(store.read_bytes(t))
    if t.HasField("raw_data"):
        return t.raw_data
    if t.data_type in _FOUR_BIT:
        return None
    try:
        arr = numpy_helper.to_array(t)
    except Exception:
        return None
    arr = np.ascontiguousarray(arr)
    if sys.byteorder == "big" and arr.dtype.itemsize > 1:
        arr = arr.byteswap()
    return arr.tobytes()


def _itemsize(t: onnx.TensorProto) -> int:
    if t.data_type in _FOUR_BIT:
        return 1
    try:
        return max(1, int(helper.tensor_dtype_to_np_dtype(t.data_type).itemsize))
    except Exception:
        return 1


def _with_length(stream: bytes) -> bytes:
    return huffman._varint(len(stream)) + stream


def _split_streams(data: memoryview, count: int) -> list[memoryview]:
    r = huffman._Reader(data)
    out = []
    for _ in range(count):
        n = r.varint()
        out.append(r.take(n))
    return out


def _run_tokens(sym: np.ndarray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(run tokens, values) of ``sym`` for the ``runs`` codec."""
    nz = np.flatnonzero(sym != zero)
    values = sym[nz]
    gaps = np.diff(np.concatenate([[-1], nz])) - 1  # zeros before each value
    full = gaps // 255
    tokens = np.empty(int(full.sum()) + nz.size, np.uint8)
    # each value: `full` escape tokens, then its remainder
    ends = np.cumsum(full + 1) - 1
    tokens[:] = 255
    tokens[ends] = (gaps - full * 255).astype(np.uint8)
    return tokens, values


def _from_runs(tokens: np.ndarray, values: np.ndarray, zero: int, n: int) -> np.ndarray:
    is_value = tokens != 255
    if int(is_value.sum()) != values.size:
        raise ArchiveError("archive damaged: run tokens and values disagree")
    step = np.where(is_value, tokens.astype(np.int64) + 1, 255)
    pos = np.cumsum(step)[is_value] - 1
    if pos.size and (pos[-1] >= n or pos.min() < 0):
        raise ArchiveError("archive damaged: a run goes past the end of its tensor")
    out = np.full(n, zero, np.uint8)
    out[pos] = values
    return out


def _huffman_size(sym: np.ndarray) -> int:
    counts = np.bincount(sym, minlength=256)
    bits = huffman.coded_bits(counts)
    block = huffman.block_size(sym.size, bits / max(sym.size, 1))
    used = np.flatnonzero(counts)
    table = huffman.table_bytes(int(used[-1]) + 1) if used.size else 0
    return (bits + 7) // 8 + 8 + table + math.ceil(sym.size / block) * 2


Encoder = Callable[[], tuple[bytes, dict[str, Any]]]


def _candidates(raw: bytes, t: onnx.TensorProto) -> list[tuple[int, str, Encoder]]:
    """(estimated size, codec, encoder) for every codec that applies; an encoder's parameters
    hold ``"transform": "f16"`` when it codes the tensor's float16 form."""
    four_bit = t.data_type in _FOUR_BIT
    out = _byte_candidates(raw, _itemsize(t), four_bit)
    half = _as_f16(raw) if t.data_type == onnx.TensorProto.FLOAT else None
    if half is not None:
        for est, codec, enc in _byte_candidates(half, 2, False):
            if codec != "raw":
                out.append((est, codec, functools.partial(_as_transform, enc, "f16")))
    return out


def _as_transform(encode: Encoder, transform: str) -> tuple[bytes, dict[str, Any]]:
    data, params = encode()
    return data, {**params, "transform": transform}


def _as_f16(raw: bytes) -> bytes | None:
    """The float16 bytes of float32 ``raw`` when every value converts back bit for bit."""
    if len(raw) % 4 or not raw:
        return None
    x = np.frombuffer(raw, "<f4")
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype("<f2")
    if h.astype("<f4").tobytes() != raw:
        return None
    return h.tobytes()


def _byte_candidates(raw: bytes, size: int, four_bit: bool) -> list[tuple[int, str, Encoder]]:
    out: list[tuple[int, str, Encoder]] = [(len(raw), "raw", lambda: (raw, {}))]
    itemsize = size
    b = np.frombuffer(raw, np.uint8)
    if size > 1 and b.size % size == 0:
        planes = [np.ascontiguousarray(p) for p in b.reshape(-1, size).T]
    else:
        planes, size = [b], 1
    est = sum(_huffman_size(p) for p in planes)
    out.append((est, "huffman", lambda: (b"".join(_with_length(huffman.encode(p)) for p in planes), {"planes": size})))
    symbols: list[tuple[np.ndarray, int]] = []
    if four_bit:
        nib = unpack_nibbles(raw)
        symbols.append((nib, 4))
        out.append((_huffman_size(nib), "nibbles", lambda: (huffman.encode(nib), {})))
    elif size == 1:
        symbols.append((b, 8))
    for sym, unit in symbols:
        counts = np.bincount(sym, minlength=256)
        zero = int(counts.argmax())
        if counts[zero] * 2 < sym.size:
            continue
        tokens, values = _run_tokens(sym, zero)
        est_runs = _huffman_size(tokens) + _huffman_size(values)

        def enc(tokens: np.ndarray = tokens, values: np.ndarray = values, zero: int = zero, unit: int = unit) -> tuple[bytes, dict[str, Any]]:
            data = _with_length(huffman.encode(tokens)) + _with_length(huffman.encode(values))
            return data, {"zero": zero, "unit": unit}

        out.append((est_runs, "runs", enc))
    if len(raw) <= ZLIB_MAX_BYTES:
        z = zlib.compress(raw, 9)
        out.append((len(z), "zlib", lambda: (z, {})))
    if len(raw) <= (XZ_MAX_INDEX_BYTES if itemsize == 1 else XZ_MAX_BYTES):
        x = _xz(raw)
        out.append((len(x), "xz", lambda: (x, {})))
    return out


def pack(proto: onnx.ModelProto, store: TensorStore | None = None) -> bytes:
    """The archive of ``proto`` (not modified); ``store`` reads its external data."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(proto)
    blobs: list[bytes] = []
    entries: list[dict[str, Any]] = []
    for ref, t in enumerate(iter_tensors(skeleton)):
        raw = _tensor_bytes(t, store)
        if raw is None and is_external(t):
            raise ModelError(f"tensor {t.name!r}: external data that cannot be read; load the model from its file")
        if raw is None or len(raw) <= MIN_CODED_BYTES:
            if raw is not None and is_external(t):  # small: embedded in the skeleton
                t.ClearField("external_data")
                t.ClearField("data_location")
                t.raw_data = raw
            continue
        best = min(_candidates(raw, t), key=lambda c: c[0])
        data, params = best[2]()
        codec = best[1]
        if codec == "raw" or len(data) >= len(raw):  # nothing gained: the skeleton (compressed) holds it
            if is_external(t):
                t.ClearField("external_data")
                t.ClearField("data_location")
                t.raw_data = raw
            continue
        entries.append({"ref": ref, "codec": codec, **params, **_blob(data, raw)})
        blobs.append(data)
        for f in _DATA_FIELDS:
            t.ClearField(f)
        t.ClearField("raw_data")
        if is_external(t):
            t.ClearField("external_data")
            t.ClearField("data_location")
    sk = skeleton.SerializeToString()
    sk_z, sk_codec = zlib.compress(sk, 9), "zlib"
    sk_x = _xz(sk)
    if len(sk_x) < len(sk_z):
        sk_z, sk_codec = sk_x, "xz"
    index = _write_index({**_blob(sk_z, sk), "codec": sk_codec}, entries)
    return _HEADER.pack(MAGIC, VERSION, 0, len(index)) + index + b"".join(blobs) + sk_z


def _write_index(skeleton: dict[str, Any], entries: list[dict[str, Any]]) -> bytes:
    v = huffman._varint
    out = bytearray([CODECS.index(skeleton["codec"])])
    out += v(skeleton["length"]) + v(skeleton["size"]) + struct.pack("<I", skeleton["crc32"])
    out += v(len(entries))
    prev = -1
    for e in entries:
        out += v(e["ref"] - prev - 1)
        prev = e["ref"]
        out += bytes([CODECS.index(e["codec"]), TRANSFORMS.index(e.get("transform"))])
        out += v(e["length"]) + v(e["size"]) + struct.pack("<I", e["crc32"])
        if e["codec"] == "huffman":
            out.append(e["planes"])
        elif e["codec"] == "runs":
            out += bytes([e["zero"], e["unit"]])
    return bytes(out)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_XZ_FILTERS)


def _unxz(data: bytes | memoryview, size: int, what: str) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_XZ_FILTERS)
    try:
        out = d.decompress(bytes(data), max_length=size + 1)
    except lzma.LZMAError as e:
        raise ArchiveError(f"archive damaged: {what} does not decompress ({e})") from None
    if len(out) != size:
        raise ArchiveError(f"archive damaged: {what} decompresses to the wrong size")
    return out


def _blob(data: bytes, decoded: bytes) -> dict[str, int]:
    return {"length": len(data), "size": len(decoded), "crc32": zlib.crc32(decoded)}


# --------------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------------
def _inflate(data: bytes | memoryview, size: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, size + 1)
    except zlib.error as e:
        raise ArchiveError(f"archive damaged: {what} does not inflate ({e})") from None
    if len(out) != size or not d.eof:
        raise ArchiveError(f"archive damaged: {what} inflates to the wrong size")
    return out


def _decode_tensor(e: dict[str, Any], data: memoryview) -> bytes:
    """The tensor bytes of index entry ``e`` from its blob ``data``."""
    transform = e.get("transform")
    if transform is None:
        return _decode_payload(e, data, int(e["size"]))
    if transform == "f16":
        size = int(e["size"])
        if size % 4:
            raise ArchiveError(f"archive damaged: tensor {_label(e)} has a bad float16 size")
        half = _decode_payload(e, data, size // 2)
        if len(half) != size // 2:
            raise ArchiveError(f"archive damaged: tensor {_label(e)} decodes to the wrong size")
        return np.frombuffer(half, "<f2").astype("<f4").tobytes()
    raise ArchiveError(f"archive has tensor {_label(e)} in unknown transform {transform!r}")


def _label(e: dict[str, Any]) -> str:
    return repr(e["name"]) if e.get("name") else f"#{e.get('ref')}"


def _decode_payload(e: dict[str, Any], data: memoryview, size: int) -> bytes:
    codec = e["codec"]
    what = f"tensor {_label(e)}"
    if codec == "raw":
        return bytes(data)
    if codec == "zlib":
        return _inflate(data, size, what)
    if codec == "xz":
        return _unxz(data, size, what)
    v1 = bool(e.get("v1"))
    try:
        if codec == "huffman":
            planes = int(e["planes"])
            if planes < 1 or size % planes:
                raise ArchiveError(f"archive damaged: {what} has a bad plane count")
            streams = [huffman.decode(s, byte_lengths=v1) for s in _split_streams(data, planes)]
            if any(s.size != size // planes for s in streams):
                raise ArchiveError(f"archive damaged: {what} has planes of the wrong size")
            return np.stack(streams, axis=1).tobytes() if planes > 1 else streams[0].tobytes()
        if codec == "nibbles":
            return pack_nibbles(huffman.decode(data, byte_lengths=v1)[: size * 2])
        if codec == "runs":
            unit, zero = int(e["unit"]), int(e["zero"])
            count = size * 2 if unit == 4 else size
            if unit not in (4, 8) or int(e.get("count", count)) != count or not 0 <= zero < 256:
                raise ArchiveError(f"archive damaged: {what} has a bad run header")
            tok_s, val_s = _split_streams(data, 2)
            sym = _from_runs(huffman.decode(tok_s, byte_lengths=v1), huffman.decode(val_s, byte_lengths=v1), zero, count)
            return pack_nibbles(sym) if unit == 4 else sym.tobytes()
    except huffman.HuffmanError as err:
        raise ArchiveError(f"archive damaged: {what}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise ArchiveError(f"archive damaged: {what}: {err}") from None
    raise ArchiveError(f"archive has {what} in unknown codec {codec!r}")


def _slice(body: memoryview, e: dict[str, Any], what: str) -> memoryview:
    try:
        off, length = int(e["offset"]), int(e["length"])
    except (KeyError, TypeError, ValueError):
        raise ArchiveError(f"archive damaged: {what} has no valid offset/length") from None
    if off < 0 or length < 0 or off + length > len(body):
        raise ArchiveError(f"archive damaged or truncated: {what} lies outside the file")
    return body[off : off + length]


def read_index(data: bytes | memoryview) -> dict[str, Any]:
    """The parsed index of an archive: ``{"skeleton": BLOB, "tensors": [ENTRY, ...], "_body":
    offset of the first blob}``, every blob with its ``offset`` from ``_body`` (format 1 and 2)."""
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise ArchiveError("archive truncated: shorter than its header")
    magic, version, _flags, n = _HEADER.unpack(view[: _HEADER.size])
    if magic != MAGIC:
        raise ArchiveError("not an .onnxz archive (bad magic)")
    if version not in READABLE:
        raise ArchiveError(f"archive format version {version} is not supported (this onnxforge reads {', '.join(map(str, READABLE))})")
    if _HEADER.size + n > len(view):
        raise ArchiveError("archive truncated: the index is cut off")
    raw = view[_HEADER.size : _HEADER.size + n]
    index = _read_index_v1(raw) if version == 1 else _read_index_v2(raw)
    index["_body"] = _HEADER.size + n
    return index


def _read_index_v1(raw: memoryview) -> dict[str, Any]:
    try:
        index = json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError) as e:
        raise ArchiveError(f"archive damaged: bad index ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("tensors"), list) or not isinstance(index.get("skeleton"), dict):
        raise ArchiveError("archive damaged: bad index")
    for entry in index["tensors"]:
        if isinstance(entry, dict):
            entry["v1"] = True
    return index


def _read_index_v2(raw: memoryview) -> dict[str, Any]:
    r = huffman._Reader(raw)

    def u8() -> int:
        return int(r.take(1)[0])

    def u32() -> int:
        return int(struct.unpack("<I", r.take(4))[0])

    def codec(i: int) -> str:
        if i >= len(CODECS):
            raise ArchiveError(f"archive has a tensor in unknown codec #{i}")
        return CODECS[i]

    try:
        sk_codec = codec(u8())
        skeleton: dict[str, Any] = {"codec": sk_codec, "length": r.varint(), "size": r.varint(), "crc32": u32()}
        count = r.varint()
        if count > len(raw):  # every entry takes several bytes
            raise ArchiveError("archive damaged: bad index")
        tensors: list[dict[str, Any]] = []
        ref, offset = -1, 0
        for _ in range(count):
            ref += r.varint() + 1
            e: dict[str, Any] = {"ref": ref, "codec": codec(u8())}
            t = u8()
            if t >= len(TRANSFORMS):
                raise ArchiveError(f"archive has tensor #{ref} in unknown transform #{t}")
            e["transform"] = TRANSFORMS[t]
            e["length"], e["size"], e["crc32"] = r.varint(), r.varint(), u32()
            if e["codec"] == "huffman":
                e["planes"] = u8()
            elif e["codec"] == "runs":
                e["zero"], e["unit"] = u8(), u8()
            e["offset"] = offset
            offset += e["length"]
            tensors.append(e)
        skeleton["offset"] = offset
    except huffman.HuffmanError:
        raise ArchiveError("archive damaged: the index is cut off") from None
    if r.pos != len(raw):
        raise ArchiveError("archive damaged: bad index")
    return {"skeleton": skeleton, "tensors": tensors}


def _skeleton(body: memoryview, sk: dict[str, Any]) -> onnx.ModelProto:
    """The skeleton ModelProto (coded tensors without data), CRC-checked."""
    codec = sk.get("codec", "zlib")
    if codec not in ("zlib", "xz"):
        raise ArchiveError(f"archive damaged: the skeleton is in codec {codec!r}")
    inflate = _unxz if codec == "xz" else _inflate
    sk_bytes = inflate(_slice(body, sk, "the skeleton"), int(sk.get("size", -1)), "the skeleton")
    _check_crc(sk_bytes, sk, "the skeleton")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(sk_bytes)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ArchiveError(f"archive damaged: the skeleton is not a model ({err})") from None
    return proto


def unpack(data: bytes | memoryview) -> onnx.ModelProto:
    """The ModelProto of an archive made by :func:`pack`."""
    view = memoryview(data)
    index = read_index(view)
    body = view[index.pop("_body") :]
    proto = _skeleton(body, index["skeleton"])
    tensors = list(iter_tensors(proto))
    for e in index["tensors"]:
        if not isinstance(e, dict):
            raise ArchiveError("archive damaged: bad tensor entry")
        ref = e.get("ref")
        if not isinstance(ref, int) or not 0 <= ref < len(tensors) or ("name" in e and tensors[ref].name != e["name"]):
            raise ArchiveError(f"archive damaged: tensor entry {_label(e)} does not match the skeleton")
        t = tensors[ref]
        e["name"] = t.name
        size = int(e.get("size", -1))
        if size != _expected_bytes(t):
            raise ArchiveError(f"archive damaged: tensor {t.name!r} has {size} bytes, its shape needs {_expected_bytes(t)}")
        raw = _decode_tensor(e, _slice(body, e, f"tensor {t.name!r}"))
        if len(raw) != size:
            raise ArchiveError(f"archive damaged: tensor {t.name!r} decodes to {len(raw)} bytes, not {size}")
        _check_crc(raw, e, f"tensor {t.name!r}")
        t.raw_data = raw
    return proto


def _expected_bytes(t: onnx.TensorProto) -> int:
    n = math.prod(t.dims)
    if t.data_type in _FOUR_BIT:
        return (n + 1) // 2
    return n * _itemsize(t)


def _check_crc(data: bytes, e: dict[str, Any], what: str) -> None:
    if zlib.crc32(data) != e.get("crc32"):
        raise ArchiveError(f"archive damaged: {what} fails its CRC check")


def summary(data: bytes | memoryview) -> list[dict[str, Any]]:
    """Per coded tensor: name, codec (with ``+f16`` when coded as float16), decoded and coded
    bytes; and the skeleton as a last row named ``(graph)`` (for reports)."""
    view = memoryview(data)
    index = read_index(view)
    body = view[index.pop("_body") :]
    sk = index["skeleton"]
    proto = _skeleton(body, sk)
    names = [t.name for t in iter_tensors(proto)]
    rows = []
    for e in index["tensors"]:
        ref = e.get("ref")
        name = e.get("name") or (names[ref] if isinstance(ref, int) and 0 <= ref < len(names) else None)
        codec = str(e.get("codec")) + ("+f16" if e.get("transform") == "f16" else "")
        rows.append({"name": name, "codec": codec, "bytes": e.get("size"), "coded": e.get("length")})
    rows.append({"name": "(graph)", "codec": sk.get("codec", "zlib"), "bytes": sk.get("size"), "coded": sk.get("length")})
    return rows
