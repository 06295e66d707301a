"""Measured onnxruntime choices are cached and steer the cpu pipeline."""

from __future__ import annotations

import json

from onnxforge import ort_choices
from onnxforge.pipelines import get_pipeline


def test_skip_layer_norm_choice_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    calls = []

    def fake() -> tuple[float, float]:
        calls.append(1)
        return 1.0, 0.5  # the fused op twice as fast

    monkeypatch.setattr(ort_choices, "_time_pair", fake)
    assert ort_choices.skip_layer_norm_pays() is True
    assert ort_choices.skip_layer_norm_pays() is True and len(calls) == 1
    data = json.loads(next(tmp_path.glob("ort-choices-*.json")).read_text())
    assert data["skip_layer_norm"]["pays"] is True


def _fuse_ort(pipeline):  # type: ignore[no-untyped-def]
    return next(p for p in pipeline.leaves() if p.name == "fuse-onnxruntime")


def test_cpu_pipeline_follows_the_measurement_unless_the_user_decides(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(ort_choices, "_time_pair", lambda: (1.0, 3.0))  # fused op slower
    assert _fuse_ort(get_pipeline("optimize", None, "cpu")).options.skip_layer_norm is False
    assert _fuse_ort(get_pipeline("optimize", None, "cuda")).options.skip_layer_norm is True
    forced = get_pipeline("optimize", {"fuse-onnxruntime": {"skip_layer_norm": True}}, "cpu")
    assert _fuse_ort(forced).options.skip_layer_norm is True
