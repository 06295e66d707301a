"""The .onnxz archive: Huffman streams, lossless round trips (byte-identical for raw-data models),
the codec each tensor gets, damaged archives refused in one line, and the commands that read
archives (load, pack, unpack, analyze, compile)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import ModelError
from onnxforge.ir import archive, huffman
from onnxforge.ir.tensor_data import unpack_nibbles
from onnxforge.runtime.session import create_session

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "symbols",
    [
        np.zeros(0, np.uint8),
        np.array([7], np.uint8),
        np.full(5000, 3, np.uint8),
        RNG.integers(0, 256, 70_000).astype(np.uint8),
        RNG.choice(16, 200_001, p=np.r_[0.85, np.full(15, 0.01)]).astype(np.uint8),
    ],
    ids=["empty", "one", "constant", "uniform", "skewed"],
)
def test_huffman_round_trips(symbols):
    data = huffman.encode(symbols)
    assert np.array_equal(huffman.decode(data), symbols)


def test_huffman_is_close_to_the_entropy_and_limits_code_length():
    p = np.r_[0.5, np.full(16, 0.5 / 16)]
    s = RNG.choice(17, 100_000, p=p).astype(np.uint8)
    entropy = -(p * np.log2(p)).sum()  # 3 bits
    assert 8 * len(huffman.encode(s)) / s.size < entropy * 1.02
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.array(fib))  # unlimited, the rarest code would be 29 bits
    assert lengths.max() <= huffman.MAX_LENGTH
    s = np.repeat(np.arange(30, dtype=np.uint8), fib)
    assert np.array_equal(huffman.decode(huffman.encode(s)), s)


def test_damaged_huffman_streams_raise():
    data = bytearray(huffman.encode(RNG.integers(0, 4, 10_000).astype(np.uint8)))
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(bytes(data[: len(data) // 2]))
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(b"\xff\xff\xff")


def _model(opset: int = 17) -> onnx.ModelProto:
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    idx = RNG.choice(16, (64, 32), p=np.r_[0.9, np.full(15, 0.1 / 15)]).astype(np.uint8)  # a pruned codebook index table
    book = np.linspace(-1, 1, 16).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["idx"], ["idx32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["book", "idx32"], ["w2"], axis=0),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.arange(64, dtype=np.int64) % 4, "s")),
        helper.make_node("Add", ["h", "w2_row"], ["y0"]),
        helper.make_node("MatMul", ["x", "w2"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(idx, "idx"),
        numpy_helper.from_array(book, "book"),
        helper.make_tensor("w2_row", TensorProto.FLOAT, [32], RNG.standard_normal(32).tolist()),  # float_data
        helper.make_tensor("pos", TensorProto.INT64, [400], (np.arange(400) % 4).tolist()),  # int64_data, unused
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [2, 32]), helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_archive_round_trip_is_lossless_and_picks_a_codec_per_tensor():
    m = _model()
    data = archive.pack(m)
    assert archive.is_archive(data) and not archive.is_archive(m.SerializeToString())
    back = archive.unpack(data)
    rows = archive.summary(data)
    assert rows[-1]["name"] == "(graph)" and rows[-1]["coded"] < rows[-1]["bytes"]
    codecs = {e["name"]: e["codec"] for e in rows[:-1]}
    assert codecs["idx"] in ("runs", "xz")  # the pruned index table: zero runs (Huffman) or LZMA
    assert codecs["w"] == "huffman"  # float weights: Huffman per byte plane
    assert "book" not in codecs  # 64 bytes or less stay in the skeleton
    assert codecs["pos"] in ("huffman", "zlib", "xz")
    pos = next(t for t in back.graph.initializer if t.name == "pos")
    assert pos.HasField("raw_data") and not pos.int64_data  # a coded typed tensor comes back as raw_data ...
    np.testing.assert_array_equal(numpy_helper.to_array(pos), np.arange(400) % 4)  # ... with the same values
    w2_row = next(t for t in back.graph.initializer if t.name == "w2_row")
    assert len(w2_row.float_data) == 32  # nothing to gain: left as it was, in the skeleton
    raw_only = _model()
    raw_only.graph.initializer.pop()
    assert archive.unpack(archive.pack(raw_only)).SerializeToString() == raw_only.SerializeToString()  # byte-identical
    feeds = {"x": RNG.standard_normal((2, 64)).astype(np.float32)}
    a, b = OrtRunner().run(m, feeds), OrtRunner().run(back, feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert len(data) < len(m.SerializeToString()) * 0.8


def test_packed_4bit_tensors_round_trip():
    vals = RNG.choice(16, 4001, p=np.r_[0.7, np.full(15, 0.02)]).astype(np.uint8)
    flat = np.concatenate([vals, [0]])
    raw = ((flat[0::2] & 15) | (flat[1::2] << 4)).astype(np.uint8).tobytes()
    t = helper.make_tensor("q", TensorProto.UINT4, [4001], raw, raw=True)
    g = helper.make_graph([helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT32)], "g", [], [helper.make_tensor_value_info("y", TensorProto.INT32, [4001])], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    data = archive.pack(m)
    assert {e["codec"] for e in archive.summary(data)[:-1]} <= {"runs", "nibbles", "huffman"}  # pairs of nibbles may win
    assert archive.unpack(data).SerializeToString() == m.SerializeToString()


def test_damaged_archives_are_refused_in_one_line(tmp_path):
    data = archive.pack(_model())
    cases = {
        "truncated": data[: len(data) - 100],
        "flipped": data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:],
        "version": data[:8] + b"\x09\x00" + data[10:],
        "index": data[:20] + b"\x00" * 8 + data[28:],
        "header only": data[:12],
    }
    for name, bad in cases.items():
        p = tmp_path / f"{name}.onnxz"
        p.write_bytes(bad)
        with pytest.raises(ModelError) as e:
            modelio.load(p)
        assert "\n" not in str(e.value) and str(p) in str(e.value), name


def test_load_analyze_compile_and_sessions_read_archives(tmp_path, capsys):
    m = _model()
    src = tmp_path / "m.onnx"
    src.write_bytes(m.SerializeToString())
    z = tmp_path / "m.onnxz"
    assert main(["pack", str(src), "-o", str(z), "-q"]) == 0
    loaded = modelio.load(z)
    assert loaded.path == z and len(loaded.model.graph.initializers) == 5
    feeds = {"x": RNG.standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_array_equal(create_session(z).run(["y"], feeds)[0], create_session(src).run(["y"], feeds)[0])
    assert main(["analyze", str(z), "--no-probe"]) == 0
    assert "MACs" in capsys.readouterr().out
    assert main(["compile", str(z), "-o", str(tmp_path / "c.onnx"), "--pipeline", "lossless", "-q", "--no-cost"]) == 0
    out = tmp_path / "back.onnx"
    assert main(["unpack", str(z), "-o", str(out), "-q"]) == 0
    assert out.read_bytes() == archive.unpack(z.read_bytes()).SerializeToString()


def test_pack_and_unpack_refuse_bad_paths(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    src.write_bytes(_model().SerializeToString())
    assert main(["pack", str(src), "-o", str(src)]) == 2  # never over the input
    assert main(["unpack", str(src), "-o", str(tmp_path / "x.onnx")]) == 2  # not an archive
    err = capsys.readouterr().err
    assert "is the input model" in err and "not an .onnxz archive" in err


def test_external_data_is_packed_embedded(tmp_path):
    m = _model()
    path = tmp_path / "ext.onnx"
    modelio.save(modelio.load(m).model, path, external_data=True)
    assert (tmp_path / "ext.onnx.data").exists()
    z = tmp_path / "ext.onnxz"
    assert main(["pack", str(path), "-o", str(z), "-q"]) == 0
    back = archive.unpack(z.read_bytes())
    assert not any(t.data_location == TensorProto.EXTERNAL for t in back.graph.initializer)
    feeds = {"x": RNG.standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_array_equal(OrtRunner().run(back, feeds)["y"], OrtRunner().run(m, feeds)["y"])


def test_each_codec_round_trips():
    sym = RNG.choice(16, 30_001, p=np.r_[0.9, np.full(15, 0.1 / 15)]).astype(np.uint8)
    sym[5000:6000] = 0  # a run longer than 255
    t = numpy_helper.from_array(sym, "s")
    packed = bytes(((np.r_[sym, [0]][0::2] & 15) | (np.r_[sym, [0]][1::2] << 4)).astype(np.uint8))
    t4 = helper.make_tensor("s4", TensorProto.UINT4, [sym.size], packed, raw=True)
    f = numpy_helper.from_array(RNG.standard_normal(5000).astype(np.float32), "f")
    seen = set()
    for tensor, raw in ((t, sym.tobytes()), (t4, packed), (f, f.raw_data)):
        for _, codec, encode in archive._candidates(raw, tensor):
            data, params = encode()
            entry = {"name": tensor.name, "codec": codec, "size": len(raw), **params}
            assert archive._decode_tensor(entry, memoryview(data)) == raw, codec
            seen.add(codec)
    assert seen == {"raw", "huffman", "nibbles", "runs", "zlib", "xz"}


def _with_float(name: str, values: np.ndarray) -> onnx.ModelProto:
    m = _model()
    m.graph.initializer.pop()  # "pos" is int64_data: it comes back as raw_data, the same values
    m.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
    return m


def test_float32_tensors_of_float16_values_are_coded_at_half_size():
    half = RNG.standard_normal(600).astype(np.float16).astype(np.float32)  # rounded scales or biases
    half[:4] = [0.0, -0.0, np.inf, 65504.0]
    m = _with_float("scales", half)
    data = archive.pack(m)
    rows = {r["name"]: r for r in archive.summary(data)}
    assert rows["scales"]["codec"].endswith("+f16") and rows["scales"]["coded"] <= 0.55 * 2400
    assert archive.unpack(data).SerializeToString() == m.SerializeToString()  # -0.0 and inf kept bit for bit
    almost = half.copy()
    almost[7] = np.nextafter(np.float32(almost[7]), np.float32(np.inf))  # one value float16 cannot hold
    m2 = _with_float("scales", almost)
    data2 = archive.pack(m2)
    assert not {r["name"]: r for r in archive.summary(data2)}["scales"]["codec"].endswith("+f16")
    assert archive.unpack(data2).SerializeToString() == m2.SerializeToString()


def _v1_archive(m: onnx.ModelProto) -> bytes:
    """The model as format 1 wrote it: a zlib JSON index with names and offsets, Huffman code
    lengths one byte each, the skeleton last (kept readable)."""
    import json
    import zlib

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(m)
    entries, blobs, offset = [], [], 0
    for ref, t in enumerate(archive.iter_tensors(skeleton)):
        if t.name == "idx":  # a Huffman stream in the old layout
            stream = huffman.encode(np.frombuffer(t.raw_data, np.uint8))
            r = huffman._Reader(stream)
            n, block, top = r.varint(), r.varint(), r.varint()
            lengths = unpack_nibbles(r.take(huffman.table_bytes(top)))[:top]
            old = huffman._varint(n) + huffman._varint(block) + huffman._varint(top) + lengths.tobytes() + bytes(r.data[r.pos :])
            blob, params = huffman._varint(len(old)) + old, {"codec": "huffman", "planes": 1}
        elif t.name == "w":
            blob, params = zlib.compress(t.raw_data), {"codec": "zlib"}
        else:
            continue
        entries.append({"ref": ref, "name": t.name, "offset": offset, "length": len(blob), "size": len(t.raw_data), "crc32": zlib.crc32(t.raw_data), **params})
        blobs.append(blob)
        offset += len(blob)
        t.ClearField("raw_data")
    sk = skeleton.SerializeToString()
    sk_z = zlib.compress(sk)
    index = {"skeleton": {"offset": offset, "length": len(sk_z), "size": len(sk), "crc32": zlib.crc32(sk), "codec": "zlib"}, "tensors": entries}
    index_z = zlib.compress(json.dumps(index).encode())
    return archive._HEADER.pack(archive.MAGIC, 1, 0, len(index_z)) + index_z + b"".join(blobs) + sk_z


def test_format_1_archives_are_still_read():
    m = _model()
    m.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.arange(400, dtype=np.int64) % 4, "pos"))
    old = _v1_archive(m)
    assert archive.unpack(old).SerializeToString() == m.SerializeToString()
    assert {r["name"]: r["codec"] for r in archive.summary(old)}["idx"] == "huffman"


def test_every_damaged_index_byte_is_refused_or_harmless():
    m = _model()
    data = archive.pack(m)
    end = archive.read_index(data)["_body"]
    for pos in range(8, end):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        try:
            back = archive.unpack(bytes(bad))
        except ModelError as e:
            assert "\n" not in str(e)
            continue
        assert back.SerializeToString() == archive.unpack(data).SerializeToString(), pos  # e.g. the flags
