"""The ONNX backend test cases as conformance suite: the default pipeline (optimize: lossless
cleanup plus fusion), the same for the onnxruntime targets (contrib fusions, raise-opset, NCHWc
lowering) and the lossless one must preserve every case onnxruntime can run. The whole suite
takes well under a minute per pipeline, so it runs by default."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest

from onnxforge.conformance import run_suite


@pytest.fixture(
    scope="module",
    params=[("optimize", None), ("optimize", "cpu"), ("optimize", "cpu-native"), ("lossless", None)],
    ids=["optimize", "optimize-cpu", "optimize-cpu-native", "lossless"],
)
def summary(request):
    pipeline, target = request.param
    return run_suite(pipeline, target=target)


def test_pipeline_preserves_every_runnable_case(summary):
    failures = [f"{o.name}: {o.status}: {o.detail}" for o in summary.failures]
    assert not failures, f"{len(failures)} of {summary.runnable} cases broken:\n" + "\n".join(failures[:20])


def test_suite_covers_what_onnxruntime_can_run(summary):
    # 1,635 runnable cases on onnx 1.23 / onnxruntime 1.32 (node cases plus the model sets).
    if onnx.__version__.startswith("1.23.") and onnxruntime.__version__.startswith("1.32."):
        assert summary.runnable == 1635
    else:
        assert summary.runnable > 1400
