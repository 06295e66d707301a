"""Output paths never touch the input: not its model file, not any external-data file it reads
(compared by real path and by inode, so hard links and symlinks are caught), not via --report or
--dump-ir. Symlinked outputs are written through; files get the umask's mode; a failed write of a
model + data pair leaves the previous pair (or nothing) behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import mlp
from onnx import TensorProto, helper, numpy_helper

import onnxforge
from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import PassError, UsageError


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _external(folder: Path, name: str = "in.onnx", location: str = "w.bin") -> Path:
    """x[1,32] -> MatMul W -> Identity -> y; W lives in ``location``."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Identity", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / name
    onnx.save_model(m, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def _compile(args: list[str], capsys) -> tuple[int, str]:
    code = main(["compile", *args, "-q", "--no-cost", "--pipeline", "lossless"])
    err = capsys.readouterr().err
    return code, err


def _refused(code: int, err: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err, err


# ---- 1. the output's external-data file (or any output) is a file the input reads -------------
def test_output_data_file_that_is_the_inputs_data_is_refused(tmp_path, capsys):
    src = _external(tmp_path, "in.onnx", location="out.onnx.data")
    before = _digests(tmp_path)
    code, err = _compile([str(src), "-o", str(tmp_path / "out.onnx")], capsys)
    _refused(code, err)
    assert "out.onnx.data" in err and "input" in err
    assert _digests(tmp_path) == before  # nothing written, input data intact


def test_output_hard_link_or_symlink_to_an_input_file_is_refused(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = _external(tmp_path / "in")
    before = _digests(tmp_path / "in")
    os.link(tmp_path / "in" / "w.bin", tmp_path / "out" / "hard.onnx.data")
    code, err = _compile([str(src), "-o", str(tmp_path / "out" / "hard.onnx")], capsys)
    _refused(code, err)
    os.symlink(tmp_path / "in" / "w.bin", tmp_path / "out" / "soft.onnx.data")
    code, err = _compile([str(src), "-o", str(tmp_path / "out" / "soft.onnx")], capsys)
    _refused(code, err)
    os.link(src, tmp_path / "out" / "model_link.onnx")
    code, err = _compile([str(src), "-o", str(tmp_path / "out" / "model_link.onnx")], capsys)
    _refused(code, err)
    assert _digests(tmp_path / "in") == before
    assert not (tmp_path / "out" / "hard.onnx").exists() and not (tmp_path / "out" / "soft.onnx").exists()


def test_report_and_dump_ir_cannot_overwrite_input_files(tmp_path, capsys):
    src = _external(tmp_path)
    before = _digests(tmp_path)
    for report in (src, tmp_path / "w.bin"):
        code, err = _compile([str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(report)], capsys)
        _refused(code, err)
        assert not (tmp_path / "o.onnx").exists()  # refused before any work
    # the report and the model are the same file
    code, err = _compile([str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "o.onnx")], capsys)
    _refused(code, err)
    # a dump folder holding (a link to) an input file under a name the dump would use
    dump = tmp_path / "dump"
    dump.mkdir()
    os.link(src, dump / "001_shape-inference.onnx")
    code, err = _compile([str(src), "-o", str(tmp_path / "o.onnx"), "--dump-ir", str(dump)], capsys)
    _refused(code, err)
    # --dump-ir naming a file
    code, err = _compile([str(src), "-o", str(tmp_path / "o.onnx"), "--dump-ir", str(src)], capsys)
    _refused(code, err)
    assert not (tmp_path / "o.onnx").exists()
    assert _digests(tmp_path) == before


def test_dump_instrument_refuses_to_write_over_input_files(tmp_path):
    src = _external(tmp_path)
    before = _digests(tmp_path)
    dump = tmp_path / "dump"
    dump.mkdir()
    # (a hard link to the data file would make onnx refuse to load the input at all)
    for name, make in (("001_shape-inference.onnx.data", os.symlink), ("001_shape-inference.onnx", os.link)):
        target = dump / name
        make(tmp_path / ("w.bin" if name.endswith(".data") else "in.onnx"), target)
        # inside the pipeline the refusal arrives wrapped in the PassError of the running pass
        with pytest.raises((UsageError, PassError), match="dump file.* is the input"):
            onnxforge.compile(src, "lossless", dump_dir=dump)
        target.unlink()
    assert _digests(tmp_path) == before


def test_library_save_refuses_the_inputs_data_file(tmp_path):
    src = _external(tmp_path, "in.onnx", location="out.onnx.data")
    before = _digests(tmp_path)
    result = onnxforge.compile(src, "lossless")
    with pytest.raises(UsageError, match="input"):
        result.save(tmp_path / "out.onnx")
    loaded = modelio.load(src)
    with pytest.raises(UsageError, match="input"):
        modelio.save(loaded.model, tmp_path / "out.onnx", source=src)
    with pytest.raises(UsageError, match="input"):  # the store knows its files even without source=
        modelio.save(loaded.model, tmp_path / "out.onnx")
    assert _digests(tmp_path) == before
    feeds = {"x": np.ones((1, 32), np.float32)}
    OrtRunner().run(str(src), feeds)  # still loads


# ---- 3. symlinked outputs are written through -------------------------------------------------
def test_symlinked_output_is_written_through(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    (tmp_path / "real.onnx").write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to("real.onnx")
    code, err = _compile([str(src), "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == "real.onnx"
    onnx.checker.check_model(onnx.load(tmp_path / "real.onnx"))
    # dangling link: its target is created
    dangling = tmp_path / "dangling.onnx"
    dangling.symlink_to("created.onnx")
    code, err = _compile([str(src), "-o", str(dangling)], capsys)
    assert code == 0, err
    assert dangling.is_symlink() and (tmp_path / "created.onnx").is_file()
    # a link to the input is refused
    to_input = tmp_path / "to_input.onnx"
    to_input.symlink_to("m.onnx")
    before = _digests(tmp_path)
    code, err = _compile([str(src), "-o", str(to_input)], capsys)
    _refused(code, err)
    assert _digests(tmp_path) == before and to_input.is_symlink()


def test_symlinked_output_with_external_data(tmp_path, capsys):
    src = _external(tmp_path)
    (tmp_path / "o").mkdir()
    link = tmp_path / "o" / "link.onnx"
    link.symlink_to("real.onnx")
    code, err = _compile([str(src), "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink()
    feeds = {"x": np.ones((1, 32), np.float32)}
    r = OrtRunner()
    want = r.run(str(src), feeds)["y"]
    np.testing.assert_array_equal(r.run(str(link), feeds)["y"], want)  # opened through the link
    np.testing.assert_array_equal(r.run(str(tmp_path / "o" / "real.onnx"), feeds)["y"], want)  # and directly
    # a link into another folder cannot give one data location that works from both: refused
    (tmp_path / "elsewhere").mkdir()
    far = tmp_path / "o" / "far.onnx"
    far.symlink_to(tmp_path / "elsewhere" / "t.onnx")
    code, err = _compile([str(src), "-o", str(far)], capsys)
    _refused(code, err)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ---- 4. file modes follow the umask -----------------------------------------------------------
def test_output_files_get_the_umask_mode(tmp_path, capsys):
    src = _external(tmp_path)
    old = os.umask(0o027)
    try:
        code, err = main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "-q", "--no-cost",
                          "--pipeline", "lossless", "--report", str(tmp_path / "r.json"),
                          "--dump-ir", str(tmp_path / "dump")]), capsys.readouterr().err
    finally:
        os.umask(old)
    assert code == 0, err
    files = [tmp_path / "o.onnx", tmp_path / "o.onnx.data", tmp_path / "r.json", *(tmp_path / "dump").iterdir()]
    assert len(files) >= 5
    for f in files:
        assert (f.stat().st_mode & 0o777) == 0o640, (f.name, oct(f.stat().st_mode))


# ---- 5. the model + data pair is replaced as a unit -------------------------------------------
@pytest.mark.parametrize("existing", [False, True])
def test_failed_model_rename_rolls_back_the_data_file(tmp_path, monkeypatch, existing):
    src = _external(tmp_path)
    loaded = modelio.load(src)
    out = tmp_path / "o.onnx"
    if existing:
        modelio.save(mlp(), out, external_data=True)
    before = _digests(tmp_path)
    real_replace = os.replace
    calls = []

    def failing_replace(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UsageError, match="No space left"):
        modelio.save(loaded.model, out, source=src, external_data=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) >= 2
    assert _digests(tmp_path) == before  # old pair intact, or nothing new at all
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxforge-")]


@pytest.mark.parametrize("fail_on", [1, 2])
def test_rollback_without_hard_links(tmp_path, monkeypatch, fail_on):
    """Where hard links are unsupported the previous data file is moved aside; a failed rename
    of the new data file (1) or of the model (2) must still put it back."""
    src = _external(tmp_path)
    loaded = modelio.load(src)
    out = tmp_path / "o.onnx"
    modelio.save(mlp(), out, external_data=True)
    before = _digests(tmp_path)
    real_replace = os.replace
    calls = []

    def no_link(a, b):
        raise OSError(1, "Operation not permitted")

    def failing_replace(a, b):
        calls.append((a, b))
        if len(calls) == fail_on:
            raise OSError(5, "Input/output error")
        return real_replace(a, b)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UsageError, match="Input/output error"):
        modelio.save(loaded.model, out, source=src, external_data=True)
    monkeypatch.undo()
    assert _digests(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxforge-")]
