"""The CLI's happy paths: compile with each flag, and the pass listing."""

from __future__ import annotations

import json

import onnx
import pytest
from builders import if_with_capture

from onnxforge.cli import main
from onnxforge.equivalence import assert_equivalent
from onnxforge.models.cnn import small_cnn


def test_compile_with_report_dump_and_verify(tmp_path, capsys):
    model, _ = small_cnn()
    src = tmp_path / "cnn.onnx"
    onnx.save(model, src)
    out, report, dumps = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "dumps"
    code = main(["compile", str(src), "-o", str(out), "--verify", "--report", str(report), "--dump-ir", str(dumps)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "verification: outputs match" in stdout and "nodes" in stdout
    data = json.loads(report.read_text())
    assert data["verified"] is True and data["before"]["nodes"] == 24 and data["after"]["nodes"] < 24
    names = {p["name"] for p in data["passes"]}
    assert {"constant-folding", "noop-elimination", "dead-code-elimination"} <= names
    assert all(p["seconds"] >= 0 for p in data["passes"])
    dumped = sorted(p.name for p in dumps.iterdir())
    assert dumped and dumped[0].startswith("001_")
    assert_equivalent(model, onnx.load(out), rtol=1e-5, atol=1e-6)


def test_custom_pass_list_and_options(tmp_path, capsys):
    model, _ = small_cnn()
    src = tmp_path / "cnn.onnx"
    onnx.save(model, src)
    out = tmp_path / "o.onnx"
    code = main(["compile", str(src), "-o", str(out), "-q", "--passes", "noop-elimination,dead-code-elimination"])
    assert code == 0 and capsys.readouterr().out == ""
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "Identity" not in ops and "Dropout" not in ops and "Shape" in ops  # nothing folded
    code = main(["compile", str(src), "-o", str(out), "-q", "--option", "constant-folding.fold_shapes=false"])
    assert code == 0
    code = main(["compile", str(src), "-o", str(out), "--option", "constant-folding.nope=1"])
    assert code == 2 and "has no option 'nope'" in capsys.readouterr().err
    code = main(["compile", str(src), "-o", str(out), "--passes", "constant-foldng"])
    assert code == 2 and "did you mean 'constant-folding'" in capsys.readouterr().err


def test_subgraphs_and_functions_survive_the_cli(tmp_path, capsys):
    m = if_with_capture()
    src = tmp_path / "if.onnx"
    onnx.save(m, src)
    out = tmp_path / "o.onnx"
    assert main(["compile", str(src), "-o", str(out), "-q", "--verify"]) == 0
    got = onnx.load(out)
    assert got.functions == m.functions and any(n.op_type == "If" for n in got.graph.node)
    onnx.checker.check_model(got, full_check=True)


def test_passes_listing(capsys):
    assert main(["passes"]) == 0
    text = capsys.readouterr().out
    assert "lossless" in text and "constant-folding" in text and "size_limit" in text
    assert main(["passes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "lossless" in data["pipelines"] and data["passes"]["cse"]["lossless"] is True


def test_target_cpu_and_explain(tmp_path, capsys):
    model, _ = small_cnn()
    src = tmp_path / "cnn.onnx"
    onnx.save(model, src)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    code = main(["compile", str(src), "-o", str(out), "--target", "cpu", "--report", str(report), "--explain", conv, "--no-cost"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"rules on node {conv!r}" in stdout and "fusions:" in stdout
    data = json.loads(report.read_text())
    assert data["pipeline"] == "optimize (target cpu)" and data["rules"]["hits"]
    assert any(o.domain == "com.microsoft" for o in onnx.load(out).opset_import)
    with pytest.raises(SystemExit) as exc:
        main(["compile", str(src), "-o", str(out), "--target", "tpu"])
    assert exc.value.code == 2


@pytest.mark.parametrize("pipeline", ["fp16", "int4"])
def test_verify_lossy_pipelines_with_their_declared_budget(pipeline, tmp_path, capsys):
    """fp16 and int4 used to fail every --verify: they were held to the lossless tolerance."""
    from onnxforge.models.cnn import transformer_block

    model, _ = transformer_block()
    src, out, report = tmp_path / "block.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(model, src)
    code = main(["compile", str(src), "-o", str(out), "--pipeline", pipeline, "--verify", "--report", str(report), "--no-cost"])
    stdout = capsys.readouterr().out
    assert code == 0 and "verification: within the lossy budget" in stdout
    data = json.loads(report.read_text())
    assert data["verified"] is True and data["verification"].startswith("lossy") and "SQNR >=" in data["verification"]


def _conv_chain_files(tmp_path, n: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.15).astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "chain.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((10, 8, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((3, 8, 16, 16)).astype(np.float32))
    return tmp_path / "chain.onnx", tmp_path / "calib.npz", tmp_path / "eval.npz"


def test_int8_budget_miss_fails_unless_allowed(tmp_path, capsys):
    """33 layers, at most 32 go back to float: a 200 dB SQNR budget cannot be met."""
    src, calib, _ = _conv_chain_files(tmp_path, 33)
    out = tmp_path / "o.onnx"
    args = ["compile", str(src), "-o", str(out), "--pipeline", "int8", "--calibration", str(calib)]
    args += ["--min-sqnr", "200", "--no-speed-guard", "--no-cost", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "misses its accuracy budget" in err and "short by" in err
    assert not out.exists()
    report = tmp_path / "r.json"
    assert main([*args, "--allow-budget-miss", "--report", str(report)]) == 0
    data = json.loads(report.read_text())["quantization"]
    assert out.exists() and data["budget"]["missed"] and "held-out" in data["budget"]["data"]


def test_int8_eval_inputs_measure_the_budget(tmp_path, capsys):
    src, calib, evals = _conv_chain_files(tmp_path, 2)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    args = ["compile", str(src), "-o", str(out), "--pipeline", "int8", "--calibration", str(calib)]
    assert main([*args, "--eval", str(evals), "--no-speed-guard", "--no-cost", "--report", str(report)]) == 0
    q = json.loads(report.read_text())["quantization"]
    assert q["calibration_samples"] == 10 and q["budget"]["data"].startswith("3 --eval sample")
    assert "measured on 3 --eval sample" in capsys.readouterr().out
    assert main(["compile", str(src), "-o", str(out), "--eval", str(evals)]) == 2  # int8 only


def test_int8_runs_in_the_pass_system(tmp_path, capsys):
    """int8 is a pass of the int8 pipeline: --dump-ir, --check-ir, --disable and per-pass
    timing apply to it like to any other pass."""
    src, calib, _ = _conv_chain_files(tmp_path, 2)
    out, report, dumps = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "dumps"
    args = ["compile", str(src), "-o", str(out), "--pipeline", "int8", "--calibration", str(calib)]
    args += ["--no-speed-guard", "--no-cost", "-q", "--report", str(report)]
    assert main([*args, "--dump-ir", str(dumps), "--check-ir"]) == 0
    data = json.loads(report.read_text())
    timing = {p["name"]: p for p in data["passes"]}
    assert timing["quantize-int8"]["runs"] == 1 and timing["quantize-int8"]["seconds"] > 0
    assert timing["quantize-int8"]["stats"]["quantized"] == 2
    dumped = sorted(p.name for p in dumps.iterdir())
    assert dumped[-1].endswith("_quantize-int8.onnx")  # the last change is the quantization
    assert "DequantizeLinear" in {n.op_type for n in onnx.load(dumps / dumped[-1]).graph.node}
    assert {n.op_type for n in onnx.load(out).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    # Disabled by name: the int8 pipeline then only optimizes.
    assert main([*args, "--disable", "quantize-int8"]) == 0
    assert "DequantizeLinear" not in {n.op_type for n in onnx.load(out).graph.node}
    assert "quantize-int8" not in {p["name"] for p in json.loads(report.read_text())["passes"]}


def test_verify_with_onnxruntime_fusions_on_a_masked_transformer(tmp_path, capsys):
    """--target cpu fuses Attention, which reads the mask as keep/drop; --verify's random feeds
    give an attention mask the values a mask takes (0/1), so the lossless check holds."""
    from onnxforge.models.cnn import transformer_block

    model, _ = transformer_block()
    src, out = tmp_path / "block.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    code = main(["compile", str(src), "-o", str(out), "--target", "cpu", "--verify", "--no-cost", "--report", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    assert "Attention" in {n.op_type for n in onnx.load(out).graph.node}
