"""Bad or tricky input through the CLI: every invalid input is refused with one line and a
non-zero exit, no traceback, no output file, and the input untouched; every valid one compiles."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import if_with_capture, mlp
from onnx import TensorProto, helper, numpy_helper

from onnxforge.cli import main

PIPELINE = os.environ.get("ONNXFORGE_TEST_PIPELINE", "lossless")


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else ""


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _external(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location="ext.bin", size_threshold=0)
    return path


def _with_location(src: Path, dst: Path, location: str, offset: str | None = None) -> Path:
    m = onnx.load(src, load_external_data=False)
    t = m.graph.initializer[0]
    for e in t.external_data:
        if e.key == "location":
            e.value = location
        if e.key == "offset" and offset is not None:
            e.value = offset
    if offset is not None and not any(e.key == "offset" for e in t.external_data):
        t.external_data.add(key="offset", value=offset)
    onnx.save(m, dst)
    return dst


def bad_inputs(folder: Path) -> list[tuple[str, Path]]:
    """(label, path) of ~100 invalid or damaged models, generated in ``folder``."""
    out: list[tuple[str, Path]] = []

    def write(label: str, data: bytes) -> None:
        p = folder / f"{label}.onnx"
        p.write_bytes(data)
        out.append((label, p))

    good = mlp().SerializeToString()
    sub = if_with_capture().SerializeToString()
    write("empty", b"")
    write("text", b"this is not an onnx model\n")
    write("random", np.random.default_rng(0).bytes(4096))
    for i, cut in enumerate(np.linspace(1, len(good) - 1, 30).astype(int)):
        write(f"trunc_mlp_{i}", good[:cut])
    for i, cut in enumerate(np.linspace(1, len(sub) - 1, 15).astype(int)):
        write(f"trunc_if_{i}", sub[:cut])
    write("graph_message", mlp().graph.SerializeToString())
    write("tensor_message", mlp().graph.initializer[0].SerializeToString())
    write("nodeproto_message", mlp().graph.node[0].SerializeToString())

    def mutated(label: str, fn) -> None:  # noqa: ANN001
        m = mlp()
        fn(m)
        write(label, m.SerializeToString())

    mutated("cycle", lambda m: m.graph.node[0].input.__setitem__(0, "r"))
    mutated("self_loop", lambda m: m.graph.node[2].input.__setitem__(0, "r"))
    mutated("undefined_input", lambda m: m.graph.node[1].input.__setitem__(1, "ghost"))
    mutated("undefined_output", lambda m: m.graph.output[0].__setattr__("name", "ghost"))
    mutated("duplicate_output_name", lambda m: m.graph.node[1].output.__setitem__(0, "h"))
    mutated("ir_version_99", lambda m: setattr(m, "ir_version", 99))
    mutated("ir_version_0", lambda m: setattr(m, "ir_version", 0))
    mutated("opset_99", lambda m: m.opset_import[0].__setattr__("version", 99))
    mutated("opset_0", lambda m: m.opset_import[0].__setattr__("version", 0))
    mutated("no_opset", lambda m: m.ClearField("opset_import"))
    mutated("unknown_standard_op", lambda m: m.graph.node[2].__setattr__("op_type", "NotAnOp"))
    mutated("no_graph", lambda m: m.ClearField("graph"))
    mutated("bad_attr_type", lambda m: m.graph.node[2].attribute.append(helper.make_attribute("alpha", "x")))
    folder_ext = folder / "ext"
    folder_ext.mkdir()
    ext = _external(folder_ext)
    out.append(("escape_dotdot", _with_location(ext, folder_ext / "dotdot.onnx", "../ext/ext.bin")))
    out.append(("escape_absolute", _with_location(ext, folder_ext / "abs.onnx", str(folder_ext / "ext.bin"))))
    out.append(("escape_etc", _with_location(ext, folder_ext / "etc.onnx", "/etc/hostname")))
    out.append(("missing_data", _with_location(ext, folder_ext / "missing.onnx", "nothere.bin")))
    out.append(("past_end", _with_location(ext, folder_ext / "past.onnx", "ext.bin", offset="4000")))
    secret = folder / "secret.bin"
    secret.write_bytes(os.urandom(32 * 32 * 4))
    os.symlink(secret, folder_ext / "link.bin")
    out.append(("symlink_escape", _with_location(ext, folder_ext / "link.onnx", "link.bin")))
    return out


def test_bad_inputs_are_refused_cleanly(tmp_path, capsys):
    cases = bad_inputs(tmp_path)
    assert len(cases) >= 60
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for label, path in cases:
        before = _digest(path)
        out = out_dir / f"{label}.onnx"
        code, stdout, stderr = _run(["compile", str(path), "-o", str(out), "--pipeline", PIPELINE], capsys)
        assert code in (1, 2), f"{label}: exit {code}, stderr={stderr!r}"
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("onnxforge: error:"), f"{label}: {stderr!r}"
        assert "Traceback" not in stderr and "internal error" not in stderr, label
        assert not out.exists() and not Path(str(out) + ".data").exists(), label
        assert _digest(path) == before, f"{label}: input modified"
    assert not [p for p in out_dir.iterdir()], "leftover files in the output folder"


def test_bit_flips_are_either_refused_cleanly_or_compiled(tmp_path, capsys):
    good = mlp().SerializeToString()
    rng = np.random.default_rng(7)
    refused = compiled = 0
    for i in range(40):
        data = bytearray(good)
        pos = int(rng.integers(0, len(data)))
        data[pos] ^= 1 << int(rng.integers(0, 8))
        src = tmp_path / f"flip{i}.onnx"
        src.write_bytes(bytes(data))
        before = _digest(src)
        out = tmp_path / f"flip{i}.out.onnx"
        code, _, stderr = _run(["compile", str(src), "-o", str(out), "-q", "--pipeline", PIPELINE], capsys)
        where = f"flip {i} at byte {pos}: exit {code}, stderr={stderr!r}"
        assert "Traceback" not in stderr and "internal error" not in stderr, where
        assert _digest(src) == before, f"{where}: input modified"
        if code == 0:
            compiled += 1
            assert out.is_file(), where
            onnx.checker.check_model(onnx.load(out))
        else:
            refused += 1
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            assert code in (1, 2), where
            assert len(lines) == 1 and lines[0].startswith("onnxforge: error:"), where
            assert not out.exists() and not Path(str(out) + ".data").exists(), where
    # Seeded: some flips land in weights (still a valid model), others in structure. Both kinds
    # must occur, or this test no longer exercises what it claims to.
    assert refused >= 5 and compiled >= 5, (refused, compiled)


def test_output_path_problems(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    digest = _digest(src)
    for label, out in [
        ("same_as_input", src),
        ("same_via_dotdot", tmp_path / "x" / ".." / "m.onnx"),
        ("missing_folder", tmp_path / "nope" / "o.onnx"),
        ("is_a_folder", tmp_path),
        ("under_a_file", src / "o.onnx"),
    ]:
        (tmp_path / "x").mkdir(exist_ok=True)
        code, _, stderr = _run(["compile", str(src), "-o", str(out)], capsys)
        assert code == 2, f"{label}: {code} {stderr}"
        assert stderr.count("\n") == 1 and "Traceback" not in stderr, label
        assert _digest(src) == digest, label
    code, _, stderr = _run(["compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "not found" in stderr


def test_usage_errors_exit_2(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(mlp(), src)
    for args in (
        ["compile", str(src), "-o", str(tmp_path / "o.onnx"), "--pipeline", "nope"],
        ["compile", str(src)],
        ["frobnicate"],
    ):
        with pytest.raises(SystemExit) as e:
            if main(args) != 0:
                raise SystemExit(2)
        assert e.value.code == 2
        capsys.readouterr()


def test_unknown_custom_domain_ops_pass_through(tmp_path, capsys):
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mystery", ["r"], ["y"], domain="com.example", flavor="strange"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    src = tmp_path / "c.onnx"
    onnx.save(m, src)
    code, _, stderr = _run(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "-q"], capsys)
    assert code == 0, stderr
    out = onnx.load(tmp_path / "o.onnx")
    node = next(n for n in out.graph.node if n.op_type == "Mystery")
    assert node.domain == "com.example" and node.attribute[0].s == b"strange"


def test_console_script_runs_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "onnxforge"
    r = subprocess.run([str(exe), "compile", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("onnxforge: error:") and "Traceback" not in r.stderr
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "onnxforge" in r.stdout
