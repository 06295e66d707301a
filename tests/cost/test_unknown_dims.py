"""Open input dims (issue 18): the cost model never prints a total computed with a height, width
or sequence bound to 1. It takes the size the model implies (metadata, a constant the input
meets, a Reshape target), else refuses the size-dependent figures naming the dims to set; a
batch may default to 1. Also over every corpus model and export with a dynamic dim."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from corpus_required import corpus_model
from onnx import TensorProto, helper, numpy_helper

from onnxforge import modelio
from onnxforge.analysis.shapes import anonymous_symbol, bind_inputs
from onnxforge.cli import main
from onnxforge.cost import analyze
from onnxforge.cost.roofline import H100
from onnxforge.ir import from_proto
from onnxforge.models.corpus import list_corpus
from onnxforge.models.exports import list_exports
from onnxforge.models.real_models import MODELS


def _conv_model(dims: list[object], *, const_hw: int | None = None, meta: dict[str, str] | None = None) -> onnx.ModelProto:
    """x (NCHW, ``dims``) -> [Add a positional table of 1x3xSxS] -> Conv 3x3 (3 -> 8)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")]
    nodes = []
    src = "x"
    if const_hw is not None:
        inits.append(numpy_helper.from_array(np.zeros((1, 3, const_hw, const_hw), np.float32), "pos"))
        nodes.append(helper.make_node("Add", ["x", "pos"], ["xp"], name="add_pos"))
        src = "xp"
    nodes.append(helper.make_node("Conv", [src, "w"], ["y"], pads=[1, 1, 1, 1]))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, None, None])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def _conv_macs(h: int, w: int) -> int:
    return 8 * 3 * 9 * h * w


def test_a_constant_the_input_meets_implies_its_size() -> None:
    r = analyze(from_proto(_conv_model(["N", 3, "H", "W"], const_hw=16)), target=H100)
    assert r.complete
    assert r.bindings.inputs["x"] == (1, 3, 16, 16)
    assert r.bindings.batch == ["x[0] ('N')"]
    assert set(r.bindings.implied) == {"x[2] ('H')", "x[3] ('W')"}
    assert r.totals.macs == _conv_macs(16, 16)


def test_metadata_gives_the_input_size() -> None:
    r = analyze(from_proto(_conv_model([1, 3, "?", "?"], meta={"imgsz": "[32, 48]"})), target=H100)
    assert r.complete and r.bindings.inputs["x"] == (1, 3, 32, 48)
    assert r.totals.macs == _conv_macs(32, 48)
    assert all("metadata 'imgsz'" in src for _, src in r.bindings.implied.values())


def test_a_reshape_target_implies_a_sequence_length() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(np.array([4, 16], np.int64), "s")],
    )
    b = bind_inputs(from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))
    assert b.complete and b.inputs["x"] == (1, 64)


def test_open_size_dims_refuse_the_size_dependent_figures() -> None:
    m = from_proto(_conv_model([-1, 3, "?", "?"]))
    r = analyze(m, target=H100)
    assert not r.complete
    assert r.bindings.missing == ["x[2]", "x[3]"] and r.bindings.batch == ["x[0]"]
    msg = r.bindings.missing_message()
    assert "x[2], x[3]" in msg and "--shape x=1x3xHxW" in msg and "\n" not in msg
    d = r.to_dict()
    assert d["complete"] is False and d["total"]["macs"] is None and d["total"]["est_latency_ms"] is None
    assert d["total"]["params"] == 8 * 3 * 9 and "macs" in d["depends_on_assumed_dims"]
    assert d["dims"]["missing"] == ["x[2]", "x[3]"]
    # the two '?' are separate unknowns: fixing them by shape gives the real figure
    fixed = analyze(m, shapes={"x": (1, 3, 48, 192)}, target=H100)
    assert fixed.complete and fixed.totals.macs == _conv_macs(48, 192)


def test_analyze_cli_names_the_dims_and_the_flag(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m.onnx"
    onnx.save(_conv_model(["batch", 3, "height", "width"]), src)
    assert main(["analyze", str(src), "--target", "h100"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "unavailable" in ln)
    assert "x[2] ('height')" in line and "--shape x=1x3xHxW" in line and "--dim height=N" in line
    assert "MACs  " not in out and "estimated latency" not in out
    assert main(["analyze", str(src), "--target", "h100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["macs"] is None and data["missing_dims"]
    assert main(["analyze", str(src), "--target", "h100", "--json", "--dim", "height=8", "--dim", "width=8"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] and data["total"]["macs"] == _conv_macs(8, 8)
    assert data["dims"]["batch_assumed_1"] == ["x[0] ('batch')"] and data["depends_on_assumed_dims"]


def test_compile_says_the_cost_is_unavailable_rather_than_wrong(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m.onnx"
    onnx.save(_conv_model([1, 3, "?", "?"]), src)
    assert main(["compile", str(src), "-o", str(tmp_path / "out.onnx"), "--cost-target", "h100"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate unavailable: input dims x[2], x[3]" in out
    assert "est. latency" not in out


def _dynamic_models() -> list[str]:
    return sorted(MODELS) + [f"export:{n}" for n in sorted(list_exports())]


@pytest.mark.parametrize("name", _dynamic_models())
def test_every_real_model_with_a_dynamic_dim_uses_an_implied_size_or_names_its_dims(name: str) -> None:
    path = list_exports()[name[7:]] if name.startswith("export:") else corpus_model(name, list_corpus())
    model = modelio.load(path).model
    b = bind_inputs(model)
    open_dims = [
        (v.name, i, d)
        for v in model.graph.inputs
        if not v.is_initializer()
        for i, d in enumerate(v.shape() or ())
        if not isinstance(d, int)
    ]
    labels = set(b.batch) | set(b.implied) | set(b.missing)
    for inp, axis, sym in open_dims:
        # a named symbol shared by several inputs is labelled once, on its first input
        shared = isinstance(sym, str) and not anonymous_symbol(sym) and any(f"('{sym}')" in lb for lb in labels)
        assert shared or any(lb.startswith(f"{inp}[{axis}]") for lb in labels), (inp, axis, sym)
    for label in b.missing:
        assert label in b.missing_message()
    if b.missing:
        assert "--shape" in b.missing_message()
        r = analyze(model, target=H100, probe=False, reorder=False)
        assert not r.complete and r.to_dict()["total"]["macs"] is None
    assert all(d != 1 or lb in b.batch for lb, (d, _) in b.implied.items())
