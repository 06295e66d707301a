"""Measured onnxruntime choices are cached and steer the cpu pipeline."""

from __future__ import annotations

import json

from onnxforge.pipelines import get_pipeline
from onnxforge.runtime import choices as ort_choices


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


def test_nchwc_probe_tells_a_crash_from_a_cpu_without_kernels(tmp_path, monkeypatch):
    """A probe that crashed must not look like "no NCHWc kernels here" (the lowering tests skip
    on the latter, and fail on the former under CI), and it is not cached."""
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))

    def crash(convs, in_channels):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(ort_choices, "_ort_layout", crash)
    probe = ort_choices.nchwc_probe()
    assert (probe.block, probe.status) == (0, "error") and "boom" in probe.detail
    assert ort_choices.nchwc_block_size() == 0
    cached = list(tmp_path.glob("ort-choices-*.json"))
    assert not cached or "nchwc" not in json.loads(cached[0].read_text())

    monkeypatch.setattr(ort_choices, "_ort_layout", lambda convs, in_channels: {})
    assert ort_choices.nchwc_probe() == ort_choices.NchwcProbe(0, "no-kernels", ort_choices.nchwc_probe().detail)
    data = json.loads(next(tmp_path.glob("ort-choices-*.json")).read_text())
    assert data["nchwc"]["status"] == "no-kernels"  # a real answer is cached
    monkeypatch.setattr(ort_choices, "_ort_layout", crash)
    assert ort_choices.nchwc_probe().status == "no-kernels"


def test_nchwc_probe_with_a_changed_filter_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    import numpy as np

    monkeypatch.setattr(ort_choices, "_ort_layout", lambda convs, c: {n: np.zeros((8, 1)) for n, _, _ in convs})
    probe = ort_choices.nchwc_probe()
    assert (probe.block, probe.status) == (0, "layout-differs")
