"""``onnxforge diff A B``: structure (op types, interface, initializers) and numbers (outputs on
the same generated inputs), a readable table or ``--json``; bad input is one line, never a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import mlp
from onnx import TensorProto, helper, numpy_helper

from onnxforge.cli import main


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _dynamic(batch: str = "N", width: int = 4) -> onnx.ModelProto:
    m = mlp()
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width]))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]))
    return m


def test_identical_models(tmp_path, capsys):
    a = _save(mlp(), tmp_path / "a.onnx")
    code, out, err = _run(["diff", str(a), str(a), "--json"], capsys)
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["same_structure"] and d["initializers"]["unchanged"] == 2
    (o,) = d["run"]["outputs"]
    assert o["name"] == "y" and o["equal"] and o["max_abs_diff"] == 0.0 and o["cosine"] == 1.0


def test_compiled_model_against_its_source(tmp_path, capsys):
    a = _save(mlp(), tmp_path / "a.onnx")
    b = tmp_path / "b.onnx"
    assert main(["compile", str(a), "-o", str(b), "-q"]) == 0
    code, out, _ = _run(["diff", str(a), str(b)], capsys)
    assert code == 0
    assert "Identity" in out and "op type" in out and "interface: same inputs and outputs" in out
    assert "cosine" in out and "\ny " in out
    d = json.loads(_run(["diff", str(a), str(b), "--json"], capsys)[1])
    assert d["op_types"]["Identity"] == {"a": 1, "b": 0}
    assert d["run"]["outputs"][0]["max_abs_diff"] < 1e-5
    assert d["run"]["feeds"] == {"x": "float32[2x4]"}


def test_changed_initializer_values_and_types(tmp_path, capsys):
    a = _save(mlp(), tmp_path / "a.onnx")
    m = mlp()
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[0, 0] += 0.5
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
    bias = numpy_helper.to_array(m.graph.initializer[1]) + 10.0
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), "b"))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32), "unused"))
    b = _save(m, tmp_path / "b.onnx")
    d = json.loads(_run(["diff", str(a), str(b), "--json"], capsys)[1])
    c, cb = d["initializers"]["changed"]
    assert cb["name"] == "b" and cb["changed_elements"] == 3
    assert c["name"] == "W" and c["changed_elements"] == 1 and c["elements"] == 12
    assert c["max_abs_diff"] == pytest.approx(0.5, rel=1e-6)
    assert c["max_rel_diff"] == pytest.approx(0.5 / np.abs(w - np.eye(1, 12).reshape(4, 3) * 0.5).max(), rel=1e-5)
    assert d["initializers"]["added"] == {"unused": "float32[2]"}
    assert not d["run"]["outputs"][0]["equal"]
    out = _run(["diff", str(a), str(b), "--structure-only"], capsys)[1]
    assert "W" in out and "1 of 12" in out and "run on" not in out


def test_dynamic_dims_take_dim_and_shape(tmp_path, capsys):
    a = _save(_dynamic(), tmp_path / "a.onnx")
    d = json.loads(_run(["diff", str(a), str(a), "--json", "--dim", "N=5"], capsys)[1])
    assert d["run"]["feeds"] == {"x": "float32[5x4]"} and d["run"]["outputs"][0]["shape_a"] == [5, 3]
    d = json.loads(_run(["diff", str(a), str(a), "--json", "--shape", "x=7x4"], capsys)[1])
    assert d["run"]["feeds"] == {"x": "float32[7x4]"}
    d = json.loads(_run(["diff", str(a), str(a), "--json"], capsys)[1])
    assert d["run"]["feeds"] == {"x": "float32[1x4]"}  # a batch defaults to 1


def _bad(tmp_path: Path) -> dict[str, tuple[list[str], int, str]]:
    a = _save(mlp(), tmp_path / "a.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    other = _save(_dynamic(width=5), tmp_path / "other.onnx")
    renamed = mlp()
    renamed.graph.input[0].name = "z"
    renamed.graph.node[0].input[0] = "z"
    renamed_path = _save(renamed, tmp_path / "renamed.onnx")
    open_width = mlp()
    open_width.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "W"]))
    open_path = _save(open_width, tmp_path / "open.onnx")
    return {
        "missing": ([str(a), str(tmp_path / "nope.onnx")], 2, "not found"),
        "not onnx": ([str(junk), str(a)], 1, "not a valid ONNX model"),
        "other width": ([str(a), str(other)], 2, "cannot run both models"),
        "other input": ([str(a), str(renamed_path)], 2, "only in A"),
        "bad dim": ([str(a), str(a), "--dim", "N=x"], 2, ""),
        "open dim": ([str(open_path), str(open_path)], 2, "--dim W=N"),
    }


@pytest.mark.parametrize("case", ["missing", "not onnx", "other width", "other input", "bad dim", "open dim"])
def test_bad_input_is_one_line(tmp_path, capsys, case):
    args, exit_code, text = _bad(tmp_path)[case]
    code, out, err = _run(["diff", *args], capsys)
    assert code == exit_code, err
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err and text in err


def test_different_interfaces_compare_structure_only(tmp_path, capsys):
    a = _save(mlp(), tmp_path / "a.onnx")
    b = _save(_dynamic(width=5), tmp_path / "b.onnx")
    code, out, _ = _run(["diff", str(a), str(b), "--structure-only"], capsys)
    assert code == 0 and "input x: float32[2,4] -> float32[N,5]" in out
