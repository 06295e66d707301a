"""Loading and saving: validation, external data (in and out, and its safety), atomic writes."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
from builders import mlp
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.equivalence import OrtRunner, assert_equivalent
from onnxforge.errors import ModelError, UnsafeExternalDataError, UsageError


def _big_mlp(n: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _save_external(m: onnx.ModelProto, folder, location: str = "w.bin") -> str:
    path = folder / "m.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location=location, size_threshold=0)
    return str(path)


def test_external_data_roundtrip_streams_and_keeps_outputs(tmp_path):
    src = _save_external(_big_mlp(), tmp_path)
    loaded = modelio.load(src)
    assert loaded.uses_external_data
    w = loaded.model.graph.initializers["W"]
    assert isinstance(w.array(), np.ndarray) and w.array().shape == (64, 64)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = modelio.save(loaded.model, out_dir / "o.onnx", source=src)
    assert (out_dir / "o.onnx.data").exists()  # input used external data, so does the output
    feeds = {"x": np.ones((1, 64), np.float32)}
    r = OrtRunner()
    np.testing.assert_array_equal(r.run(src, feeds)["y"], r.run(str(out), feeds)["y"])
    # embedding on request
    emb = modelio.save(loaded.model, out_dir / "e.onnx", external_data=False)
    assert not (out_dir / "e.onnx.data").exists()
    np.testing.assert_array_equal(r.run(src, feeds)["y"], r.run(str(emb), feeds)["y"])


def test_large_models_switch_to_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(modelio, "EMBED_LIMIT", 1000)
    m = modelio.load(_big_mlp()).model
    modelio.save(m, tmp_path / "o.onnx")
    assert (tmp_path / "o.onnx.data").exists()
    with pytest.raises(UsageError, match="too large"):
        modelio.save(m, tmp_path / "p.onnx", external_data=False)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize(
    "location,err",
    [("../outside.bin", "leaves the model folder"), ("/etc/passwd", "absolute"), ("missing.bin", "missing")],
)
def test_external_data_outside_or_missing_is_refused(tmp_path, location, err):
    (tmp_path / "sub").mkdir()
    src = _save_external(_big_mlp(), tmp_path / "sub")
    m = onnx.load(src, load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64 * 64 * 4)
    bad = tmp_path / "sub" / "bad.onnx"
    onnx.save(m, bad)
    with pytest.raises(ModelError, match=err):
        modelio.load(bad)


def test_symlink_escape_and_past_the_end_are_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    src = _save_external(_big_mlp(), tmp_path / "sub")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(64 * 64 * 4))
    os.symlink(secret, tmp_path / "sub" / "link.bin")
    m = onnx.load(src, load_external_data=False)
    t = m.graph.initializer[0]
    for e in t.external_data:
        if e.key == "location":
            e.value = "link.bin"
    onnx.save(m, tmp_path / "sub" / "link.onnx")
    with pytest.raises(UnsafeExternalDataError, match="outside the model folder"):
        modelio.load(tmp_path / "sub" / "link.onnx")
    m2 = onnx.load(src, load_external_data=False)
    for e in m2.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = "999999"
    if not any(e.key == "offset" for e in m2.graph.initializer[0].external_data):
        m2.graph.initializer[0].external_data.add(key="offset", value="999999")
    onnx.save(m2, tmp_path / "sub" / "past.onnx")
    with pytest.raises(UnsafeExternalDataError, match="past the end"):
        modelio.load(tmp_path / "sub" / "past.onnx")


def test_save_refuses_to_overwrite_the_input_and_is_atomic(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    before = src.read_bytes()
    m = modelio.load(src).model
    with pytest.raises(UsageError, match="is the input model"):
        modelio.save(m, src, source=src)
    assert src.read_bytes() == before
    with pytest.raises(UsageError, match="does not exist"):
        modelio.save(m, tmp_path / "nope" / "o.onnx")
    modelio.save(m, tmp_path / "o.onnx")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".onnxforge-")]
    assert leftovers == []
    assert_equivalent(mlp(), onnx.load(tmp_path / "o.onnx"))


def test_load_does_not_modify_a_proto_passed_in():
    m = mlp()
    snapshot = m.SerializeToString()
    loaded = modelio.load(m)
    loaded.model.graph.remove(loaded.model.graph.nodes[-1], safe=False)
    assert m.SerializeToString() == snapshot


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda m: setattr(m, "ir_version", 99), "IR version 99"),
        (lambda m: m.opset_import[0].__setattr__("version", 99), "opset 99"),
        (lambda m: m.graph.node[1].input.__setitem__(1, "ghost"), "ghost"),
    ],
)
def test_invalid_models_get_one_line_model_errors(mutate, msg):
    m = mlp()
    mutate(m)
    with pytest.raises(ModelError, match=msg) as info:
        modelio.load(m)
    assert "\n" not in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        modelio.load(tmp_path / "none.onnx")
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        modelio.load(tmp_path / "e.onnx")
    (tmp_path / "t.onnx").write_bytes(mlp().SerializeToString()[:50])
    with pytest.raises(ModelError):
        modelio.load(tmp_path / "t.onnx")


def test_verify_works_on_models_with_external_data(tmp_path):
    import onnxforge

    src = _save_external(_big_mlp(), tmp_path)
    result = onnxforge.compile(src, "lossless", verify=True)
    assert result.report.verified is True


def test_export_does_not_mutate_the_ir():
    m = mlp()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    from onnxforge.ir import from_proto, to_proto

    ir = from_proto(m)
    v = ir.version
    out = to_proto(ir)
    assert ir.version == v and [n.name for n in ir.graph][0] == "id"
    assert [n.name for n in out.graph.node] == ["mm", "add", "relu", "id"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.ClearField("dims"), "holds 128 bytes but its dims [] and type need 4"),
        (lambda t: (t.ClearField("dims"), t.dims.extend([2])), "holds 128 bytes but its dims [2] and type need 8"),
    ],
)
def test_tensor_data_that_does_not_fit_its_dims_is_refused(edit, message):
    """Found by the fuzzer: a weight whose dims were cleared loaded fine and then crashed a pass
    (noop-elimination: cannot reshape array of size 8 into shape ())."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    edit(w)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match=re.escape(message)):
        modelio.load(m)
    typed = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    typed.float_data.extend(np.frombuffer(typed.raw_data, np.float32)[:30].tolist())
    typed.ClearField("raw_data")
    g.initializer[0].CopyFrom(typed)
    with pytest.raises(ModelError, match=r"holds 30 values but its dims \[4, 8\] say 32"):
        modelio.load(onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
