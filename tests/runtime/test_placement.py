"""The placement report: onnxruntime's own record of which provider took each node; nodes no
provider can run named one by one; FLOPs that fall back to the CPU."""

from __future__ import annotations

import json

import onnx
import pytest
from lowering_models import cuda_only_ops, matmuls

from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.commands.inputs import run_feeds
from onnxforge.cost.execution import cost_report, node_flops, provider_flops
from onnxforge.runtime.placement import NodePlacement, Placement, parse_profile, placement
from onnxforge.runtime.target import CPU_EP, CUDA_EP, TARGETS


def test_nodes_the_cpu_provider_lacks_are_named_exactly():
    p = placement(cuda_only_ops(), TARGETS["cpu"])
    assert not p.ok and p.nodes == []
    assert [(n.name, n.domain, n.op_type) for n in p.unplaced] == [
        ("bias_add", "com.microsoft", "BiasAdd"),
        ("group_norm", "com.microsoft", "GroupNorm"),
    ]
    # The first comes from onnxruntime's own error, the second from its kernel registry.
    assert "BiasAdd" in p.error and "onnxruntime: no implementation of BiasAdd(1)" in p.unplaced[0].reason
    assert p.unplaced[1].reason == "no kernel for com.microsoft.GroupNorm(1) in CPUExecutionProvider"


def test_lower_cli_says_which_nodes_and_fails(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(cuda_only_ops(), src)
    assert main(["lower", str(src), "--json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [n["name"] for n in doc["placement"]["unplaced"]] == ["bias_add", "group_norm"]
    assert err == "onnxforge: error: onnxruntime cannot run 2 node(s) on --target cpu: bias_add (com.microsoft.BiasAdd), group_norm (com.microsoft.GroupNorm)\n"


@pytest.mark.parametrize("method", ["assignment-info", "profiling"])
def test_every_node_of_a_cpu_model_is_on_the_cpu(method):
    model = matmuls(3, 32)
    feeds = run_feeds(model)
    p = placement(model, TARGETS["cpu"].with_session(optimization="disable"), method=method, feeds=feeds)
    assert p.ok and p.source == method and p.providers == [CPU_EP]
    assert [n.name for n in p.nodes] == [n.name for n in model.graph.node]
    assert {n.provider for n in p.nodes} == {CPU_EP} and p.removed == [] and p.added == []


def test_folded_nodes_are_listed_as_removed():
    """At the target's level (all) onnxruntime folds the Identity away at load time."""
    p = placement(matmuls(2, 32), TARGETS["cpu"])
    assert p.ok and "out" in p.removed and "out" not in p.provider_of()


def test_profile_parsing_reads_each_nodes_provider():
    events = [
        {"cat": "Session", "name": "model_run"},
        {"cat": "Node", "name": "conv_fence_before"},
        {"cat": "Node", "name": "conv_kernel_time", "args": {"provider": CUDA_EP, "op_name": "Conv"}},
        {"cat": "Node", "name": "unique_kernel_time", "args": {"provider": CPU_EP, "op_name": "Unique"}},
        {"cat": "Node", "name": "conv_kernel_time", "args": {"provider": CUDA_EP, "op_name": "Conv"}},
    ]
    assert parse_profile(events) == [NodePlacement("conv", "Conv", "", CUDA_EP), NodePlacement("unique", "Unique", "", CPU_EP)]


def _flops(model: onnx.ModelProto) -> dict[str, int]:
    return node_flops(cost_report(modelio.load(model).model))


def test_cpu_fallback_share_warns_above_five_percent():
    """A CUDA placement (as onnxruntime-gpu would report it) with one of four equal MatMuls on
    the CPU: 25% of the FLOPs fall back -> warning; with only a Relu there -> none."""
    model = matmuls(4, 64)
    flops = _flops(model)
    nodes = [NodePlacement(n.name, n.op_type, "", CPU_EP if n.name == "matmul3" else CUDA_EP) for n in model.graph.node]
    share = provider_flops(Placement("cuda", [CUDA_EP, CPU_EP], "assignment-info", nodes), flops)
    assert share.warn and share.cpu_share == pytest.approx(flops["matmul3"] / sum(flops.values()), rel=1e-9)
    assert 0.24 < share.cpu_share < 0.26 and share.top_cpu_nodes[0][0] == "matmul3"
    assert share.message("cuda") == (
        "24.8% of the FLOPs of --target cuda fall back to CPUExecutionProvider (more than 5%): matmul3 (8.2 kFLOP)"
    )

    relu_only = [NodePlacement(n.name, n.op_type, "", CPU_EP if n.name == "relu3" else CUDA_EP) for n in model.graph.node]
    assert not provider_flops(Placement("cuda", [CUDA_EP, CPU_EP], "assignment-info", relu_only), flops).warn
    # A CPU target has nothing to fall back from.
    cpu = [NodePlacement(n.name, n.op_type, "", CPU_EP) for n in model.graph.node]
    assert not provider_flops(Placement("cpu", [CPU_EP], "assignment-info", cpu), flops).warn


def test_lower_reports_flops_per_provider(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(2, 32), src)
    assert main(["lower", str(src), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["flops"]["by_provider"] == {CPU_EP: doc["flops"]["total"]} and doc["flops"]["warn"] is False
    assert doc["placement"]["counts"] == {CPU_EP: 4}

