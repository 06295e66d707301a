"""``onnxforge analyze`` and the cost section of ``compile``'s report."""

from __future__ import annotations

import json

import onnx

from onnxforge.cli import main
from onnxforge.models.cnn import small_cnn


def _save(tmp_path):  # type: ignore[no-untyped-def]
    model, _ = small_cnn()
    src = tmp_path / "cnn.onnx"
    onnx.save(model, src)
    return src, model


def test_analyze_prints_totals_op_summary_and_heaviest_layers(tmp_path, capsys):
    src, _ = _save(tmp_path)
    assert main(["analyze", str(src), "--target", "h100", "--top", "3"]) == 0
    out = capsys.readouterr().out
    for text in ("MACs", "parameters", "peak activation memory", "estimated latency", "op type", "heaviest 3 layers"):
        assert text in out
    ops = out.split("op type", 1)[1].split("\n\n", 1)[0]
    assert any(line.split()[0] == "Conv" for line in ops.splitlines()[2:] if line.strip())
    heavy = out.split("heaviest 3 layers", 1)[1].strip().splitlines()[3:]
    assert len(heavy) == 3 and all(line.split()[-3] in ("compute", "memory") for line in heavy), heavy


def test_analyze_json_has_the_documented_schema(tmp_path, capsys):
    src, model = _save(tmp_path)
    assert main(["analyze", str(src), "--json", "--target", "a100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["total"]) >= {"macs", "flops", "params", "weight_bytes", "peak_activation_bytes", "est_latency_ms"}
    assert data["total"]["macs"] > 0 and data["by_op_type"]["Conv"]["count"] >= 1
    assert len(data["nodes"]) == len(model.graph.node)
    assert data["target"]["name"] == "a100"


def test_analyze_shape_and_dim_flags(tmp_path, capsys):
    src, model = _save(tmp_path)
    name = model.graph.input[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert main(["analyze", str(src), "--json", "--target", "h100"]) == 0
    one = json.loads(capsys.readouterr().out)["total"]["macs"]
    spec = "x".join(str(d) for d in [2, *dims[1:]])
    code = main(["analyze", str(src), "--json", "--target", "h100", "--shape", f"{name}={spec}"])
    out = capsys.readouterr()
    if dims[0] == 1:  # a fixed batch of 1 contradicts batch 2: refused as a usage error
        assert code == 2 and "contradicts" in out.err
    else:
        assert code == 0 and json.loads(out.out)["total"]["macs"] == 2 * one


def test_analyze_usage_errors_are_one_line(tmp_path, capsys):
    src, _ = _save(tmp_path)
    for argv, text in [
        (["analyze", str(src), "--shape", "nope=1x2"], "not a model input"),
        (["analyze", str(src), "--shape", "bad"], "NAME=D1xD2"),
        (["analyze", str(src), "--shape", "x=1xq"], "integers"),
        (["analyze", str(src), "--dim", "batch"], "SYMBOL=N"),
        (["analyze", str(src), "--target", "tpu"], "unknown cost profile"),
        (["analyze", str(tmp_path / "missing.onnx")], "missing.onnx"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err


def test_analyze_refuses_an_invalid_model(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["analyze", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("onnxforge: error:")


def test_compile_report_has_cost_before_and_after(tmp_path, capsys):
    src, _ = _save(tmp_path)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["compile", str(src), "-o", str(out), "--report", str(report), "--cost-target", "h100"]) == 0
    assert "MACs" in capsys.readouterr().out
    cost = json.loads(report.read_text())["cost"]
    assert cost["target"] == "h100"
    assert cost["before"]["macs"] == cost["after"]["macs"] > 0  # lossless cleanup keeps the arithmetic
    assert cost["after"]["est_latency_ms"] <= cost["before"]["est_latency_ms"]
    assert main(["compile", str(src), "-o", str(out), "--report", str(report), "--no-cost", "-q"]) == 0
    assert "cost" not in json.loads(report.read_text())
