"""Small models for the lowering tests (built in :mod:`onnxforge.models.lowering`) and why a GPU
test cannot run here."""

from __future__ import annotations

from onnxforge.models.lowering import cuda_only_ops
from onnxforge.models.lowering import matmul_chain as matmuls
from onnxforge.models.lowering import parallel_branches as branches
from onnxforge.runtime.availability import available_providers, gpu_count

__all__ = ["branches", "cuda_only_ops", "gpu_skip_reason", "matmuls"]


def gpu_skip_reason(provider: str = "CUDAExecutionProvider") -> str | None:
    """Why a GPU test cannot run here, or None when it can."""
    if provider not in available_providers():
        return f"no GPU run: the installed onnxruntime has no {provider} (CPU-only build; needs onnxruntime-gpu)"
    if gpu_count() == 0:
        return "no GPU run: CUDA finds no GPU on this machine"
    return None
