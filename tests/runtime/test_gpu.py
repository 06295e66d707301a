"""CUDA and TensorRT on a real GPU. Marked ``gpu``; without onnxruntime-gpu or a GPU every test
here skips, saying which is missing. benchmarks/lowering.md records the figures of a GPU run."""

from __future__ import annotations

import time

import onnx
import pytest
from lowering_models import cuda_only_ops, gpu_skip_reason, matmuls

from onnxforge.commands.inputs import run_feeds
from onnxforge.runtime.bench import bench
from onnxforge.runtime.emit import ep_context_model
from onnxforge.runtime.placement import placement
from onnxforge.runtime.session import deployment_session
from onnxforge.runtime.target import CPU_EP, CUDA_EP, TARGETS, TENSORRT_EP

CUDA_SKIP = gpu_skip_reason(CUDA_EP)
TRT_SKIP = gpu_skip_reason(TENSORRT_EP)
pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(CUDA_SKIP is not None, reason=CUDA_SKIP or "")
tensorrt = pytest.mark.skipif(TRT_SKIP is not None, reason=TRT_SKIP or "")


@cuda
def test_cuda_takes_the_ops_the_cpu_provider_lacks():
    p = placement(cuda_only_ops(), TARGETS["cuda"])
    assert p.ok, p.unplaced
    where = p.provider_of()
    assert where["bias_add"] == CUDA_EP and where["group_norm"] == CUDA_EP
    assert set(where.values()) <= {CUDA_EP, CPU_EP}


@cuda
def test_cuda_bench_runs_on_the_gpu():
    model = matmuls(4, 1024)
    report = bench(model, TARGETS["cuda"].with_cuda(conv_algo_search="HEURISTIC"), run_feeds(model), min_runs=10, seconds=0.5)
    assert report.models[0].providers[0] == CUDA_EP


@tensorrt
def test_tensorrt_ep_context_reloads_faster_than_a_cold_build(tmp_path):
    model = matmuls(8, 512, dynamic=True)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    target = TARGETS["tensorrt"].with_tensorrt(cache_dir=tmp_path / "cache", fp16=True)
    t0 = time.perf_counter()
    deployment_session(str(src), target)
    cold = time.perf_counter() - t0
    ctx = tmp_path / "m_ctx.onnx"
    written = ep_context_model(str(src), target.with_tensorrt(cache_dir=tmp_path / "cache2"), ctx, embed=True)
    assert written.notes and "EPContext" in written.notes[0]
    t0 = time.perf_counter()
    sess = deployment_session(str(ctx), target)
    warm = time.perf_counter() - t0
    assert sess.get_providers()[0] == TENSORRT_EP
    assert warm < cold, (warm, cold)
