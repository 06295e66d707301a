"""Targets: what the compiled model will run on, in one object.

A :class:`Target` is the single source of everything target-specific: the onnxruntime
execution providers (in priority order) with their options, the session options sessions for
it use, and the compile-time choices that depend on it (may the compiler emit onnxruntime
contrib ops, which Q/DQ placement rules apply, whether SkipLayerNormalization is fused, whether
convolutions are lowered to the NCHWc layout of this CPU). Pipelines, passes and every
onnxruntime session read it from here; nothing else names providers.

``TARGETS`` is the explicit table of named targets (``--target NAME``); ``None`` (no
``--target``) means portable output: standard ONNX ops only, any runtime.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from onnxforge.errors import UsageError

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"

#: What to install for a provider that onnxruntime does not offer here.
_INSTALL_HINT = {
    CUDA_EP: "install onnxruntime-gpu (it replaces onnxruntime) and run on a machine with an NVIDIA GPU and CUDA 12",
    TENSORRT_EP: "install onnxruntime-gpu and TensorRT (the tensorrt wheel or system libraries) on a machine with an NVIDIA GPU",
}

GraphOptimization = Literal["disable", "basic", "extended", "all"]


@dataclass(frozen=True)
class Target:
    """One compilation and execution target.

    ``providers``: onnxruntime execution providers in priority order (the last is the
    fallback for nodes the others do not take), each with its ``provider_options``.
    ``contrib_ops``: the compiler may emit onnxruntime's com.microsoft ops (FusedConv,
    Attention, ...). ``qdq_policy``: name of the Q/DQ placement rules int8 uses.
    ``skip_layer_norm``: fuse SkipLayerNormalization (``"measure"``: only where onnxruntime's
    kernel measures faster on this machine). ``nchwc``: lower convolution regions to
    onnxruntime's NCHWc layout for this CPU's SIMD width (the model then runs only on CPUs with
    the same width). ``max_opset``: the newest default-domain opset the runtime is known to
    run (older models may be raised to it).
    """

    name: str
    providers: tuple[str, ...]
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    contrib_ops: bool = False
    qdq_policy: str = "cpu"
    skip_layer_norm: bool | Literal["measure"] = False
    nchwc: bool = False
    raise_opset_to: int | None = None
    summary: str = ""

    @property
    def primary_provider(self) -> str:
        return self.providers[0]

    def with_options(self, provider: str, **options: Any) -> Target:
        """A copy with ``options`` merged into ``provider``'s provider options."""
        if provider not in self.providers:
            raise UsageError(f"target {self.name} does not use {provider}")
        merged = {p: dict(o) for p, o in self.provider_options.items()}
        merged.setdefault(provider, {}).update({k: str(v) for k, v in options.items()})
        return dataclasses.replace(self, provider_options=merged)

    def provider_list(self) -> list[tuple[str, dict[str, str]]]:
        """``(provider, options)`` pairs, in the form onnxruntime sessions take as ``providers``."""
        return [(p, {k: str(v) for k, v in self.provider_options.get(p, {}).items()}) for p in self.providers]

    def missing_providers(self, available: list[str] | None = None) -> list[str]:
        """The providers this onnxruntime build lacks (``available`` defaults to onnxruntime's list)."""
        if available is None:
            import onnxruntime as ort  # the runtime layer is where onnxruntime is imported

            available = list(ort.get_available_providers())
        return [p for p in self.providers if p not in available]

    def check_available(self, *, strict: bool = True, available: list[str] | None = None) -> Target:
        """This target when onnxruntime offers all its providers. Otherwise, with ``strict``, a
        :class:`UsageError` saying what to install; without, the CPU target, with a warning."""
        missing = self.missing_providers(available)
        if not missing:
            return self
        first = missing[0]
        hint = _INSTALL_HINT.get(first, "install an onnxruntime build that has it")
        if strict:
            raise UsageError(
                f"--target {self.name} needs onnxruntime's {first}, which this onnxruntime does not have: {hint}"
            )
        log.warning("%s is not available (%s); falling back to CPU", first, hint)
        return TARGETS["cpu"]


TARGETS: dict[str, Target] = {
    "cpu": Target(
        "cpu",
        (CPU_EP,),
        contrib_ops=True,
        qdq_policy="cpu",
        skip_layer_norm="measure",
        raise_opset_to=17,
        summary="onnxruntime CPU: standard ops plus onnxruntime's contrib fusions",
    ),
    "cpu-native": Target(
        "cpu-native",
        (CPU_EP,),
        contrib_ops=True,
        qdq_policy="cpu",
        skip_layer_norm="measure",
        nchwc=True,
        raise_opset_to=17,
        summary="cpu, plus convolutions in onnxruntime's NCHWc layout for THIS CPU's SIMD width",
    ),
    "cuda": Target(
        "cuda",
        (CUDA_EP, CPU_EP),
        provider_options={CUDA_EP: {"cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kNextPowerOfTwo"}},
        contrib_ops=True,
        qdq_policy="cpu",
        skip_layer_norm=True,
        raise_opset_to=17,
        summary="onnxruntime CUDA: contrib fusions, SkipLayerNormalization",
    ),
    "tensorrt": Target(
        "tensorrt",
        (TENSORRT_EP, CUDA_EP, CPU_EP),
        provider_options={TENSORRT_EP: {"trt_engine_cache_enable": "True", "trt_timing_cache_enable": "True"}},
        contrib_ops=False,
        qdq_policy="tensorrt",
        summary="TensorRT: standard ops only, TensorRT's explicit-quantization Q/DQ rules",
    ),
}


def get_target(name: str | Target | None) -> Target | None:
    """The target called ``name`` (None stays None: portable output)."""
    if name is None or isinstance(name, Target):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target {name!r} (choose from {', '.join(TARGETS)})") from None
