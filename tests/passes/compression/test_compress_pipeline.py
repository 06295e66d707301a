"""The compress and low-rank pipelines from the command line, and tied weights staying tied
through every pipeline (an embedding and its LM head, tied through a Transpose or a Gemm)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxforge
from onnxforge.cli import main
from onnxforge.equivalence import OrtRunner

V, H = 200, 64


def _tied(kind: str) -> onnx.ModelProto:
    e = np.random.default_rng(0).standard_normal((V, H)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], axis=0),
        helper.make_node("LayerNormalization", ["e", "g", "b"], ["n"], axis=-1),
    ]
    inits = [numpy_helper.from_array(e, "E"), numpy_helper.from_array(np.ones(H, np.float32), "g"),
             numpy_helper.from_array(np.zeros(H, np.float32), "b")]  # fmt: skip
    if kind == "transpose":
        nodes += [helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]), helper.make_node("MatMul", ["n", "Et"], ["logits"])]
    else:  # a Gemm reading the table with transB, between Reshapes (as GPT-2 exports spell it)
        nodes += [
            helper.make_node("Reshape", ["n", "shape"], ["n2"]),
            helper.make_node("Gemm", ["n2", "E"], ["l2"], transB=1),
            helper.make_node("Reshape", ["l2", "shape2"], ["logits"]),
        ]
        inits += [numpy_helper.from_array(np.array([-1, H], np.int64), "shape"),
                  numpy_helper.from_array(np.array([1, -1, V], np.int64), "shape2")]  # fmt: skip
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, V])], inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _large(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if np.prod(t.dims) >= V * H // 4]


@pytest.mark.parametrize("kind", ["transpose", "gemm"])
@pytest.mark.parametrize("pipeline", ["optimize", "fp16", "compress"])
def test_tied_weights_stay_tied(kind, pipeline):
    result = onnxforge.compile(_tied(kind), pipeline)
    assert len(_large(result.model)) == 1, _large(result.model)  # one table, read by both


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'models' extra)")
    from onnxforge.models.digits import load_digits_split
    from onnxforge.models.lenet import train_lenet_300_100

    d = tmp_path_factory.mktemp("lenet")
    model, (x_test, y_test) = train_lenet_300_100(epochs=10)
    (x_train, _), _ = load_digits_split(0)
    onnx.save(model, d / "mlp.onnx")
    np.savez(d / "calib.npz", input=x_train[:200])
    np.savez(d / "eval.npz", input=x_test, labels=y_test)
    return d


def test_compress_pipeline_holds_its_accuracy_budget_and_packs_small(lenet, capsys):
    d = lenet
    out, report = d / "mlp.c.onnx", d / "report.json"
    args = ["compile", str(d / "mlp.onnx"), "-o", str(out), "--pipeline", "compress", "--bits", "3",
            "--calibration", str(d / "calib.npz"), "--eval-data", str(d / "eval.npz"), "--max-accuracy-drop", "0.5",
            "--min-cosine", "0", "--no-cost", "--report", str(report)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "weight sharing: 3-bit codebooks" in text and "accuracy:" in text
    sharing = json.loads(report.read_text())["compression"][0]
    before, after = sharing["accuracy"]
    assert (before - after) * 100 <= 0.5
    assert all(layer["bits"] is None or 3 <= layer["bits"] <= 8 for layer in sharing["layers"])
    z = d / "mlp.c.onnxz"
    assert main(["pack", str(out), "-o", str(z), "-q"]) == 0
    assert z.stat().st_size * 5 < (d / "mlp.onnx").stat().st_size  # 3+-bit codebooks, entropy-coded
    x = np.load(d / "eval.npz")["input"][:5]
    assert OrtRunner().run(str(z), {"input": x})["logits"].shape == (5, 10)


def test_compress_for_cpu_lowers_to_packed_kernels(lenet):
    d = lenet
    out = d / "mlp.cpu.onnx"
    assert main(["compile", str(d / "mlp.onnx"), "-o", str(out), "--pipeline", "compress", "--target", "cpu", "--min-cosine", "0.9", "-q", "--no-cost"]) == 0
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "MatMulNBits" in ops and "Gather" not in ops


def test_low_rank_pipeline_and_flag_errors(lenet, capsys):
    d = lenet
    out = d / "mlp.lr.onnx"
    assert main(["compile", str(d / "mlp.onnx"), "-o", str(out), "--pipeline", "low-rank", "--calibration",
                 str(d / "calib.npz"), "--min-cosine", "0.99", "--no-cost", "--option", "low-rank.min_elements=1000"]) == 0  # fmt: skip
    assert "low rank:" in capsys.readouterr().out
    assert main(["compile", str(d / "mlp.onnx"), "-o", str(d / "x.onnx"), "--bits", "4"]) == 2
    assert main(["compile", str(d / "mlp.onnx"), "-o", str(d / "x.onnx"), "--pipeline", "low-rank", "--bits", "4"]) == 2
    assert "--bits" in capsys.readouterr().err
    assert main(["compile", str(d / "mlp.onnx"), "-o", str(d / "x.onnx"), "--pipeline", "low-rank", "--mixed-bits"]) == 2
    assert "--mixed-bits" in capsys.readouterr().err


def test_mixed_bits_from_the_command_line(lenet, capsys):
    d = lenet
    out, report = d / "mlp.mixed.onnx", d / "mixed.json"
    args = ["compile", str(d / "mlp.onnx"), "-o", str(out), "--pipeline", "compress", "--bits", "3", "--mixed-bits",
            "--calibration", str(d / "calib.npz"), "--no-cost", "-q", "--report", str(report)]  # fmt: skip
    assert main(args) == 0
    sharing = json.loads(report.read_text())["compression"][0]
    layers = [layer for layer in sharing["layers"] if layer["bits"] is not None]
    total = sum(math.prod(layer["shape"]) for layer in layers)
    assert sum(math.prod(layer["shape"]) * layer["bits"] for layer in layers) <= 3 * total
    assert len({layer["bits"] for layer in layers}) > 1  # the three layers do not all keep 3 bits
