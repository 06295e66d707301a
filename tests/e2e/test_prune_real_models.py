"""Channel pruning on real graphs: the groups of PP-OCR det (residual, concat, SE, depthwise,
ConvTranspose), MobileNetV2 and ResNet-50 are cut exactly right.

The check: take the channels pruning would remove from every group and set every per-channel
parameter of them to zero in the original (producing rows, biases, depthwise weights and the
per-channel constants on the way; BatchNorm variances and divisors to 1), so that they carry
exact zeros; then pruning that model must leave every output as it was, up to float summation
order. A slice cut at a wrong offset, a tie the groups missed or a shape left stale shows up as a
difference. Then the real pipeline: valid models, same interface, fewer FLOPs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from corpus_required import corpus_model, export_model

import onnxforge
from onnxforge.calibration.taps import tapped_model
from onnxforge.equivalence import OrtRunner
from onnxforge.ir import from_proto, to_proto
from onnxforge.ir.constants import constant_value
from onnxforge.models.corpus import feeds_for, list_corpus
from onnxforge.models.exports import feeds_for_export, list_exports
from onnxforge.passes.compression.pruning import channels as C
from onnxforge.passes.compression.pruning.dependency import find_groups, removed_entries
from onnxforge.passes.compression.pruning.flow import Copies
from onnxforge.passes.compression.pruning.layers import set_input_constant


def _case(name: str) -> tuple[str, dict[str, np.ndarray]]:
    if name == "ppocr_det_v4":
        path = corpus_model(name, list_corpus())
        return str(path), feeds_for(name, onnx.load(path), seed=100)
    path = export_model(name, list_exports())
    return str(path), feeds_for_export(name, seed=100)


def _prunable(copies: Copies) -> list[C.ChannelGroup]:
    groups = find_groups(copies.base, C.channel_shapes(copies.base, None, None))
    return [g for g in groups if g.blocked is None and g.size >= 2]


@pytest.mark.parametrize(
    "name", ["ppocr_det_v4", pytest.param("mobilenet_v2", marks=pytest.mark.slow), pytest.param("resnet50", marks=pytest.mark.slow)]
)
def test_zeroed_channels_are_cut_exactly(name):
    path, feed = _case(name)
    base = onnxforge.compile(path, "optimize").model
    copies = Copies(from_proto(base))
    groups = _prunable(copies)
    assert groups
    opts = C.ChannelPruneOptions(sparsity=0.25, multiple=1, measure_latency=False)
    scores = {g.id: C.group_scores(g, "l2", {}) for g in groups}
    plan = C._ChannelPruner(copies, groups, scores, opts, None).plan({g.id: 0.25 for g in groups})
    position = {n: i for i, n in enumerate(copies.base.graph.nodes)}
    zeroed = copies.new()
    nodes = zeroed.graph.nodes
    for g in groups:
        rem = plan.removed.get(g.id)
        if rem is None:
            continue
        for p in g.params:
            node = nodes[position[p.node]]
            arr = np.array(constant_value(node.input(p.index)))
            cut = [slice(None)] * arr.ndim
            cut[p.axis] = removed_entries(p.start, p.block, rem)
            one = (node.op_type == "BatchNormalization" and p.index == 4) or node.op_type in ("Div", "Pow")
            arr[tuple(cut)] = 1 if one else 0
            set_input_constant(zeroed, node, p.index, arr)
    zeroed_proto = to_proto(zeroed)
    again = Copies(from_proto(zeroed_proto))
    groups2 = _prunable(again)
    assert [g.id for g in groups2] == [g.id for g in groups]
    pruned = C._ChannelPruner(again, groups2, scores, opts, None).build({g.id: 0.25 for g in groups2}, reconstruct=False)
    assert pruned.detail.removed
    # compare before a final Sigmoid (PP-OCR's probability map saturates)
    last = [n for n in zeroed_proto.graph.node if n.op_type == "Sigmoid" and n.output[0] == zeroed_proto.graph.output[0].name]
    names = [last[0].input[0]] if last else [o.name for o in zeroed_proto.graph.output]
    want = OrtRunner().session(tapped_model(zeroed_proto, names)[0]).run(None, feed)
    got = OrtRunner().session(tapped_model(pruned.proto, names)[0]).run(None, feed)
    for a, b in zip(want, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))


def test_the_prune_pipeline_keeps_real_models_valid(tmp_path):
    path, feed = _case("ppocr_det_v4")
    result = onnxforge.compile(
        path, "prune", options={"prune-channels": {"sparsity": 0.5, "measure_latency": False}}, verify=True
    )
    out = onnx.load(result.save(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(out)
    proto = onnx.load(path)
    assert [o.SerializeToString() for o in out.graph.output] == [o.SerializeToString() for o in proto.graph.output]
    report = result.report.pruning
    assert report.flops_after < report.flops_before / 2
    assert sum(g.removed for g in report.groups) > 1000
    y = OrtRunner().run(out, feed)
    assert all(np.isfinite(v).all() for v in y.values())
