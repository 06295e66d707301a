"""int8 on the real trained models: a valid model whose every output stays within the cosine
budget on held-out realistic inputs, with the model's input and output types unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from corpus_required import corpus_model

import onnxforge
from onnxforge.api import QuantizationOptions
from onnxforge.equivalence import OrtRunner
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.metrics.sqnr import cosine
from onnxforge.models.corpus import feeds_for, list_corpus
from onnxforge.models.real_models import MODELS

CORPUS = list_corpus()


@pytest.mark.parametrize("name", sorted(MODELS))  # not sorted(CORPUS): a missing corpus is no silent pass
def test_int8_real_model_stays_within_budget(name, tmp_path):
    path = corpus_model(name, CORPUS)
    proto = onnx.load(path)
    calib = [feeds_for(name, proto, seed=s) for s in range(8)]
    result = onnxforge.compile(
        path, "int8", quantization=QuantizationOptions(calibration=calib, speed_guard=False)
    )
    out = result.save(tmp_path / "int8.onnx")
    q = onnx.load(out)
    onnx.checker.check_model(q)
    assert [(i.name, i.type.tensor_type.elem_type) for i in q.graph.input] == [
        (i.name, i.type.tensor_type.elem_type) for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    assert [(o.name, o.type.tensor_type.elem_type) for o in q.graph.output] == [
        (o.name, o.type.tensor_type.elem_type) for o in proto.graph.output
    ]
    report = result.report.quantization
    runner = OrtRunner()
    deployed = OrtRunner(optimize=True)  # as users run it: onnxruntime's QDQ fusions on
    worst = {}
    for seed in (100, 101):
        feeds = feeds_for(name, proto, seed=seed)
        ref = runner.run(str(path), feeds)
        got = deployed.run(str(out), feeds)
        for k, v in ref.items():
            a, b = np.asarray(v, np.float64), np.asarray(got[k], np.float64)
            if a.size:
                worst[k] = min(worst.get(k, 1.0), cosine(a, b))
    # The guard holds 0.99 on the calibration batches; held-out inputs get a small margin.
    assert min(worst.values()) >= 0.985, (worst, report.kept_float)
    if report.quantized or report.weight_only:
        assert any(n.op_type == "DequantizeLinear" for g in graph_protos(q.graph) for n in g.node)
