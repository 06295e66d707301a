"""Targets: what the compiled model will run on, in one object.

A :class:`Target` is the single source of everything target-specific: the onnxruntime
execution providers (in priority order) with their options, the session options sessions for
it use, and the compile-time choices that depend on it (may the compiler emit onnxruntime
contrib ops, which Q/DQ placement rules apply, whether SkipLayerNormalization is fused, whether
convolutions are lowered to the NCHWc layout of this CPU). Pipelines, passes and every
onnxruntime session read it from here; nothing else names providers.

``TARGETS`` is the explicit table of named targets (``--target NAME``); ``None`` (no
``--target``) means portable output: standard ONNX ops only, any runtime.

Deployment settings live here too (``docs/LOWERING.md``): :class:`SessionConfig` (threads,
graph optimization level, execution mode) is what a session for the target uses when it runs
the model for real (``onnxforge bench``/``tune``/``lower``), and :meth:`Target.with_cuda` /
:meth:`Target.with_tensorrt` set the CUDA and TensorRT provider options (cuDNN algorithm search,
arena, fp16/int8, engine and timing caches, optimization profiles, EPContext export). Whether
this machine can run a target is :mod:`onnxforge.runtime.availability`'s question.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxforge.errors import UsageError

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"

GraphOptimization = Literal["disable", "basic", "extended", "all"]
ExecutionMode = Literal["sequential", "parallel"]

OPTIMIZATION_LEVELS: tuple[GraphOptimization, ...] = ("disable", "basic", "extended", "all")
EXECUTION_MODES: tuple[ExecutionMode, ...] = ("sequential", "parallel")

#: Schema tag of the session-options file ``onnxforge tune`` writes (``MODEL.session.json``).
SESSION_FILE_SCHEMA = "onnxforge.session/1"


@dataclass(frozen=True)
class SessionConfig:
    """The onnxruntime session options a target runs a model with.

    ``threads``: intra-op threads (0: onnxruntime's choice, one per physical core).
    ``inter_threads``: threads that run independent nodes at once (``execution_mode="parallel"``
    only; 0: onnxruntime's choice). ``optimization``: onnxruntime's graph optimization level.
    Analysis sessions (verification, calibration, the cost probe) do not use this: they run with
    optimizations off on one thread (:func:`onnxforge.runtime.options.session_options`).
    """

    threads: int = 0
    optimization: GraphOptimization = "all"
    execution_mode: ExecutionMode = "sequential"
    inter_threads: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 0:
            raise UsageError(f"threads must be an integer >= 0 (0: onnxruntime chooses), got {self.threads!r}")
        if not isinstance(self.inter_threads, int) or self.inter_threads < 0:
            raise UsageError(f"inter_threads must be an integer >= 0, got {self.inter_threads!r}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise UsageError(f"unknown graph optimization level {self.optimization!r} (choose from {', '.join(OPTIMIZATION_LEVELS)})")
        if self.execution_mode not in EXECUTION_MODES:
            raise UsageError(f"unknown execution mode {self.execution_mode!r} (choose from {', '.join(EXECUTION_MODES)})")

    def replace(self, **changes: Any) -> SessionConfig:
        """A copy with ``changes`` (``None`` values are ignored, so CLI flags pass straight through)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown session option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**dict(data))

    def label(self) -> str:
        """Short text, e.g. ``threads=2 all sequential``."""
        inter = f" inter={self.inter_threads}" if self.execution_mode == "parallel" else ""
        return f"threads={self.threads or 'auto'} {self.optimization} {self.execution_mode}{inter}"


def load_session_file(path: str | os.PathLike[str]) -> tuple[str | None, SessionConfig]:
    """The (target name, session options) of a file ``onnxforge tune`` wrote."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read session options from {p}: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SESSION_FILE_SCHEMA or not isinstance(data.get("session"), dict):
        raise UsageError(f"{p} is not a session-options file (schema {SESSION_FILE_SCHEMA!r})")
    target = data.get("target")
    return (str(target) if target is not None else None), SessionConfig.from_json(data["session"])


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimization profile: for each dynamic input, the smallest, the typical and the
    largest shape it will see (TensorRT builds one engine valid for the whole range, tuned for
    ``opt``). Written into ``trt_profile_{min,opt,max}_shapes`` as ``name:1x3x224x224,...``."""

    min: Mapping[str, tuple[int, ...]]
    opt: Mapping[str, tuple[int, ...]]
    max: Mapping[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        names = set(self.min)
        if set(self.opt) != names or set(self.max) != names:
            raise UsageError("a TensorRT profile needs min, opt and max shapes for the same inputs")
        for n in sorted(names):
            lo, mid, hi = tuple(self.min[n]), tuple(self.opt[n]), tuple(self.max[n])
            if not (len(lo) == len(mid) == len(hi)) or any(not (a <= b <= c) for a, b, c in zip(lo, mid, hi)):
                raise UsageError(f"TensorRT profile for {n!r}: need min <= opt <= max in every dimension, got {lo}, {mid}, {hi}")

    @staticmethod
    def _spec(shapes: Mapping[str, Sequence[int]]) -> str:
        return ",".join(f"{n}:{'x'.join(str(d) for d in shapes[n])}" for n in sorted(shapes))

    def provider_options(self) -> dict[str, str]:
        return {
            "trt_profile_min_shapes": self._spec(self.min),
            "trt_profile_opt_shapes": self._spec(self.opt),
            "trt_profile_max_shapes": self._spec(self.max),
        }


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
    session: SessionConfig = field(default_factory=SessionConfig)
    #: Generic onnxruntime EPContext export (``ep.context_*`` session config entries): the
    #: compiled engine is written into an ONNX model that later sessions load without rebuilding.
    ep_context_path: str | None = None
    ep_context_embed: bool = False

    @property
    def primary_provider(self) -> str:
        return self.providers[0]

    @property
    def uses_gpu(self) -> bool:
        return any(p in (CUDA_EP, TENSORRT_EP) for p in self.providers)

    def with_session(self, config: SessionConfig | None = None, **changes: Any) -> Target:
        """A copy running with ``config`` (default: this target's) updated by ``changes``."""
        return dataclasses.replace(self, session=(config or self.session).replace(**changes))

    def with_cuda(
        self,
        *,
        conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] | None = None,
        arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] | None = None,
        gpu_mem_limit: int | None = None,
        device_id: int | None = None,
    ) -> Target:
        """A copy with CUDA provider options: cuDNN's convolution algorithm search (EXHAUSTIVE
        times every algorithm once per shape; HEURISTIC asks cuDNN), the memory arena's growth
        strategy and limit (bytes), the device."""
        opts: dict[str, Any] = {}
        if conv_algo_search is not None:
            if conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
                raise UsageError(f"cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, got {conv_algo_search!r}")
            opts["cudnn_conv_algo_search"] = conv_algo_search
        if arena_extend_strategy is not None:
            if arena_extend_strategy not in ("kNextPowerOfTwo", "kSameAsRequested"):
                raise UsageError(f"arena_extend_strategy must be kNextPowerOfTwo or kSameAsRequested, got {arena_extend_strategy!r}")
            opts["arena_extend_strategy"] = arena_extend_strategy
        if gpu_mem_limit is not None:
            opts["gpu_mem_limit"] = int(gpu_mem_limit)
        if device_id is not None:
            opts["device_id"] = int(device_id)
        return self.with_options(CUDA_EP, **opts) if opts else self

    def with_tensorrt(
        self,
        *,
        fp16: bool | None = None,
        int8: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        profile: ShapeProfile | None = None,
        ep_context: str | os.PathLike[str] | None = None,
        ep_context_embed: bool = False,
    ) -> Target:
        """A copy with TensorRT provider options: fp16/int8 kernels (int8 takes the scales of
        the model's Q/DQ nodes: explicit quantization), the engine and timing caches in
        ``cache_dir`` (an engine is rebuilt only when the model, the profile or TensorRT
        changes), an optimization ``profile`` for dynamic dims, and an EPContext model written
        to ``ep_context`` (``ep_context_embed``: the engine inside the model, else beside it)."""
        if TENSORRT_EP not in self.providers:
            raise UsageError(f"target {self.name} does not use {TENSORRT_EP}")
        opts: dict[str, Any] = {}
        if fp16 is not None:
            opts["trt_fp16_enable"] = "True" if fp16 else "False"
        if int8 is not None:
            opts["trt_int8_enable"] = "True" if int8 else "False"
        if cache_dir is not None:
            folder = os.fspath(cache_dir)
            opts.update(
                trt_engine_cache_enable="True",
                trt_engine_cache_path=folder,
                trt_timing_cache_enable="True",
                trt_timing_cache_path=folder,
            )
        if profile is not None:
            opts.update(profile.provider_options())
        target = self.with_options(TENSORRT_EP, **opts) if opts else self
        if ep_context is not None:
            target = dataclasses.replace(target, ep_context_path=os.fspath(ep_context), ep_context_embed=ep_context_embed)
        return target

    def session_config_entries(self) -> dict[str, str]:
        """onnxruntime session config entries the target needs (EPContext export)."""
        if self.ep_context_path is None:
            return {}
        return {
            "ep.context_enable": "1",
            "ep.context_file_path": self.ep_context_path,
            "ep.context_embed_mode": "1" if self.ep_context_embed else "0",
        }

    def describe(self) -> dict[str, Any]:
        """Everything a session for this target is made of, as JSON (``bench --json``'s ``target``)."""
        return {
            "name": self.name,
            "providers": list(self.providers),
            "provider_options": {p: dict(o) for p, o in self.provider_list()},
            "session": self.session.to_json(),
        }

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

    def missing_providers(self, available: Sequence[str]) -> list[str]:
        """The providers of this target not in ``available`` (onnxruntime's list:
        :func:`onnxforge.runtime.availability.available_providers`)."""
        return [p for p in self.providers if p not in available]


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
