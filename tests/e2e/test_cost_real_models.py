"""The cost model on real models: every corpus model (If subgraphs, Constant-node weights,
LSTMs) and the transformers exports of `make exports` against independent MAC figures, each with
its source in ``models/exports.py`` (``reference_source``: torchvision's model tables, the
MobileNetV2 and TinyBERT papers, or the closed form where no source states one)."""

from __future__ import annotations

import onnx
import pytest
from corpus_required import corpus_model, export_model

from onnxforge import modelio
from onnxforge.cost import analyze
from onnxforge.cost.roofline import H100
from onnxforge.models.corpus import feeds_for, list_corpus
from onnxforge.models.exports import EXPORTS, list_exports
from onnxforge.models.real_models import MODELS

CORPUS = list_corpus()
EXPORTED = list_exports()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_corpus_model_is_costed(name):
    path = corpus_model(name, CORPUS)
    feeds = feeds_for(name, onnx.load(path), seed=0)
    report = analyze(modelio.load(path).model, shapes={k: v.shape for k, v in feeds.items()}, feeds=feeds, target=H100)
    t = report.totals
    assert t.macs > 0 and t.flops >= 2 * t.macs
    assert t.params > 0 and t.weight_bytes >= t.params  # Constant-node weights included
    assert t.peak_activation_bytes > 0 and t.est_latency_ms > 0
    assert report.no_formula() == {}
    # Only nodes of an If branch that cannot run on these inputs may stay unresolved, and such a
    # branch is never the one counted.
    for n in report.nodes:
        if n.status == "unresolved":
            assert "/" in n.graph and not n.counted, (n.name, n.graph, n.note)


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_exports_match_reference_mac_counts(name):
    path = export_model(name, EXPORTED)
    spec = EXPORTS[name]
    shapes = {i.name: tuple(i.shape) for i in spec.inputs}
    report = analyze(modelio.load(path).model, shapes=shapes, target=H100, probe=False)
    assert report.unresolved() == []
    assert spec.reference_gmacs is not None and spec.reference_source
    assert report.totals.macs / 1e9 == pytest.approx(spec.reference_gmacs, rel=0.02)
