"""``compile --report FILE.html``: one standalone page (nothing fetched from the network) with
the report's numbers, and the same numbers as JSON beside it (FILE.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

from onnxforge.cli import main
from onnxforge.models.cnn import small_cnn
from onnxforge.models.synthetic import residual_mlp_chain
from onnxforge.reporting.blocks import block_summaries, choose_depth
from onnxforge.reporting.graph_svg import layout
from onnxforge.reporting.svg import Pair, Span, paired_bars, timeline

#: Anything that would load from elsewhere: a src/href/url() pointing at a scheme or a host.
_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?\s*(?:https?:|//)|@import""", re.I)


def _compile(tmp_path: Path, model: onnx.ModelProto, *extra: str, name: str = "m") -> tuple[str, dict]:
    src = tmp_path / f"{name}.onnx"
    onnx.save(model, src)
    html = tmp_path / f"{name}.html"
    code = main(["compile", str(src), "-o", str(tmp_path / f"{name}.opt.onnx"), "--report", str(html), "-q", *extra])
    assert code == 0
    data = json.loads((tmp_path / f"{name}.json").read_text())
    return html.read_text(), data


def test_html_report_is_standalone_and_holds_the_numbers(tmp_path):
    page, data = _compile(tmp_path, small_cnn()[0])
    assert page.startswith("<!DOCTYPE html>")
    assert not _EXTERNAL.search(page), _EXTERNAL.search(page)
    assert "<script" not in page  # no script at all, so nothing can be fetched by one
    assert data["schema"] == "onnxforge.report/1"
    cost = data["cost"]
    for side in ("before", "after"):
        assert f"{cost[side]['flops']:,}" in page
        assert f"{cost[side]['params']:,}" in page
        assert f"{data[side]['nodes']:,}" in page
    for p in data["passes"]:
        assert f">{p['name']}<" in page
    # the same figures the plain JSON report has
    assert data["layers"]["before"] and data["layers"]["after"]
    assert sum(la["flops"] for la in data["layers"]["before"]) == cost["before"]["flops"]
    assert sum(la["params"] for la in data["layers"]["after"]) == cost["after"]["params"]
    assert data["timeline"] and all(s["end_s"] >= s["start_s"] >= 0 for s in data["timeline"])
    # small graph: drawn before and after, BatchNormalization folded away shows as removed
    g = data["graph"]
    assert g["before"]["drawable"] and g["after"]["drawable"]
    assert "BatchNormalization" in g["removed"]
    assert page.count('<svg class="graph"') == 2
    assert 'class="node op-norm removed"' in page
    assert "Estimated" in page or "estimated" in page


def test_html_report_summarizes_a_large_graph_per_block(tmp_path):
    page, data = _compile(tmp_path, residual_mlp_chain(400), name="chain")
    g = data["graph"]
    assert not g["before"]["drawable"]
    assert '<svg class="graph"' not in page
    assert "Blocks before and after" in page and "Heaviest layers by FLOPs" in page
    rows = g["blocks"]["rows"]
    assert sum(r["nodes_before"] for r in rows) == g["before"]["nodes"]
    assert sum(r["nodes_after"] for r in rows) == g["after"]["nodes"]
    assert g["removed_count"] >= len(g["removed"])


def test_html_report_shows_int8_sqnr_and_pruning_sparsity(tmp_path):
    model = small_cnn()[0]
    page, data = _compile(tmp_path, model, "--pipeline", "int8", "--calibration", "synthetic", "--no-speed-guard", name="q")
    errors = data["quantization"]["layer_sqnr_db"]
    assert errors and "Quantization SQNR per layer" in page
    assert f"{errors[0]['sqnr_db']:.1f} dB" in page
    page, data = _compile(tmp_path, model, "--pipeline", "prune", "--sparsity", "0.5", name="p")
    assert data["pruning"]["layers"] and "Sparsity per layer" in page
    if data["pruning"]["latency_ms"] is not None:
        assert data["latency"]["measured_ms"]["before"] == data["pruning"]["latency_ms"]["before"]


def test_html_report_json_sibling_may_not_replace_the_output(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(small_cnn()[0], src)
    code = main(["compile", str(src), "-o", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "report data" in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.html").exists()


def test_json_report_is_unchanged(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(small_cnn()[0], src)
    assert main(["compile", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json"), "-q"]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert "pipeline" in data and "layers" not in data and not (tmp_path / "r.html").exists()


def test_charts_escape_names_and_mark_missing_sides():
    svg = paired_bars([Pair("<a&b>", 10, None), Pair("x", None, 5)])
    assert "&lt;a&amp;b&gt;" in svg and "removed" in svg and "new" in svg
    svg = timeline([Span("p", 0.0, 0.5, True), Span("q", 0.5, 0.6, False)])
    assert svg.count("run-changed") >= 2 and "run-idle" in svg


def test_graph_layout_puts_each_node_below_its_producers():
    graph = {
        "inputs": ["x"],
        "outputs": ["z"],
        "nodes": [
            {"key": "c", "op_type": "Constant", "inputs": [], "outputs": ["k"]},
            {"key": "a", "op_type": "Relu", "inputs": ["x"], "outputs": ["y"]},
            {"key": "b", "op_type": "Add", "inputs": ["y", "k"], "outputs": ["z"]},
        ],
    }
    pos, edges, _ = layout(graph)
    assert pos["in:x"][0] < pos["n1"][0] < pos["n2"][0] < pos["out:z"][0]
    assert pos["n0"][0] == pos["n2"][0] - 1  # the constant sits just above its consumer
    assert ("n0", "n2") in edges


@pytest.mark.parametrize(
    ("names", "depth"),
    [
        (["/enc/l0/attn/MatMul", "/enc/l1/attn/MatMul", "/enc/l2/x/Add", "/dec/l0/Add"], 2),
        (["Conv_0", "Relu_1"], 1),
    ],
)
def test_block_depth(names, depth):
    assert choose_depth(names) == depth
    s = block_summaries([(n, "Op") for n in names], [])
    assert sum(r["nodes_before"] for r in s["rows"]) == len(names)


def test_measure_times_both_models_for_the_report(tmp_path, monkeypatch):
    from onnxforge.commands import measure

    monkeypatch.setattr(measure, "SECONDS", 0.3)
    page, data = _compile(tmp_path, small_cnn()[0], "--measure", name="timed")
    m = data["measured_latency"]
    assert m["before_ms"] > 0 and m["after_ms"] > 0 and m["rounds"] >= 5 and m["target"] == "cpu"
    assert data["latency"]["measured_ms"]["before"] == m["before_ms"]
    assert "measured" in page and f"{m['after_ms']:.4g} ms" in page


def test_measure_refuses_an_open_spatial_dim_with_a_note(tmp_path):
    model = small_cnn()[0]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    page, data = _compile(tmp_path, model, "--measure", name="open")
    assert "measured_latency" not in data
    assert any(n.startswith("latency not measured:") and "--shape" in n for n in data["notes"])


def test_names_from_the_model_are_escaped(tmp_path):
    from builders import mlp

    model = mlp()
    evil = '</title></text><script>alert("x")</script><img src="http://example.com/x.png">'
    for i, node in enumerate(model.graph.node):
        node.name = f"{evil}{i}"
    page, data = _compile(tmp_path, model, name="evil")
    assert "<script" not in page and "<img" not in page and not _EXTERNAL.search(page)
    assert data["graph"]["before"]["graph"]["nodes"][0]["key"] == f"{evil}0"
