"""Padding-aware error measurement: padded positions of [batch, sequence, ...] tensors are not
compared, everything else is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxforge.errors import UsageError
from onnxforge.metrics.padding import find_padding_mask, valid_positions
from onnxforge.passes.compression.int8.flow import measure
from onnxforge.passes.compression.int8.qdq import QdqPlan


def test_auto_finds_a_2d_attention_mask():
    sample = {"input_ids": np.zeros((1, 8), np.int64), "attention_mask": np.ones((1, 8), np.int64)}
    assert find_padding_mask("auto", ["input_ids", "attention_mask"], sample) == "attention_mask"
    assert find_padding_mask("auto", ["ids", "encoder_attention_mask"], None) == "encoder_attention_mask"
    assert find_padding_mask("auto", ["x"], {"x": np.zeros((1, 8))}) is None
    # a 4-D additive mask is not a padding mask
    assert find_padding_mask("auto", ["attention_mask"], {"attention_mask": np.zeros((1, 1, 8, 8))}) is None
    assert find_padding_mask("none", ["input_ids", "attention_mask"], sample) is None
    assert find_padding_mask(None, ["input_ids", "attention_mask"], sample) is None


def test_explicit_mask_is_checked():
    sample = {"ids": np.zeros((1, 8), np.int64), "valid": np.ones((1, 8), np.int64), "img": np.zeros((1, 3, 4, 4))}
    assert find_padding_mask("valid", ["ids", "valid", "img"], sample) == "valid"
    with pytest.raises(UsageError, match="not an input"):
        find_padding_mask("mask", ["ids", "valid"], sample)
    with pytest.raises(UsageError, match="2-D"):
        find_padding_mask("img", ["ids", "valid", "img"], sample)


def test_valid_positions_selects_rows_where_the_mask_is_set():
    t = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert valid_positions(t, mask).tolist() == [0, 1, 2, 3, 6, 7]
    # other shapes are compared whole
    assert valid_positions(np.arange(6).reshape(3, 2), mask).tolist() == list(range(6))
    assert valid_positions(np.arange(6).reshape(2, 3), None).tolist() == list(range(6))
    # an all-padding sample falls back to the whole tensor rather than an empty comparison
    assert valid_positions(t, np.zeros((2, 3))).size == t.size


def _encoder_like(noise_on_padding: bool) -> onnx.ModelProto:
    """h = x @ W; the "quantized" twin adds noise where attention_mask is 0."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 4], rng.standard_normal(16).astype(np.float32).tolist())
    noise = helper.make_tensor("N", TensorProto.FLOAT, [1, 6, 4], (5 * rng.standard_normal(24)).astype(np.float32).tolist())
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h0"])]
    if noise_on_padding:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
            helper.make_node("Sub", ["one", "m3"], ["pad"]),
            helper.make_node("Mul", ["pad", "N"], ["pn"]),
            helper.make_node("Add", ["h0", "pn"], ["h"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["h0"], ["h"]))
    inits = [w, noise, helper.make_tensor("axes", TensorProto.INT64, [1], [2]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    graph = helper.make_graph(
        nodes,
        "enc",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 6]),
        ],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 6, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_measure_ignores_differences_at_padded_positions():
    ref, noisy = _encoder_like(False), _encoder_like(True)
    rng = np.random.default_rng(1)
    samples = [
        {"x": rng.standard_normal((1, 6, 4)).astype(np.float32), "attention_mask": np.array([[1, 1, 1, 0, 0, 0]], np.int64)},
        {"x": rng.standard_normal((1, 6, 4)).astype(np.float32), "attention_mask": np.array([[1, 1, 1, 1, 1, 0]], np.int64)},
    ]
    _, sqnr_all, cos_all = measure(ref, noisy, QdqPlan(), samples)
    _, sqnr_real, cos_real = measure(ref, noisy, QdqPlan(), samples, "attention_mask")
    assert cos_all["h"] < 0.9 and sqnr_all["h"] < 10
    assert cos_real["h"] == pytest.approx(1.0) and sqnr_real["h"] == float("inf")


def test_cli_rejects_an_unknown_padding_mask_in_one_line(tmp_path, capsys):
    from onnxforge.cli import main

    src = tmp_path / "enc.onnx"
    onnx.save(_encoder_like(False), src)
    out = tmp_path / "out.onnx"
    args = ["compile", str(src), "-o", str(out), "--pipeline", "int8", "--calibration", "synthetic", "-q"]
    assert main([*args, "--padding-mask", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch" in err and not out.exists()
    report = tmp_path / "r.json"
    assert main([*args, "--report", str(report)]) == 0
    import json

    notes = json.loads(report.read_text())["quantization"]["notes"]
    assert any("padding masked by input 'attention_mask'" in n for n in notes)
