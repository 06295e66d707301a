"""Flags shared by the commands that run a model on a target (``bench``, ``tune``, ``lower``):
the target and its fallback, session options, provider options and the inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from onnxforge import modelio
from onnxforge.commands.common import parse_dims, parse_shapes
from onnxforge.commands.inputs import load_npz, run_feeds
from onnxforge.errors import UsageError
from onnxforge.runtime.availability import fallback_target, resolve
from onnxforge.runtime.target import (
    EXECUTION_MODES,
    OPTIMIZATION_LEVELS,
    TARGETS,
    TENSORRT_EP,
    ShapeProfile,
    Target,
    load_session_file,
)


def add_target_arguments(p: argparse.ArgumentParser, *, session: bool = True, default: str = "cpu") -> None:
    p.add_argument("--target", default=default, choices=list(TARGETS), help=f"where to run it (default {default})")
    p.add_argument(
        "--fallback",
        choices=list(TARGETS),
        metavar="TARGET",
        help="when --target cannot run here (no onnxruntime-gpu, no GPU), warn and use this target instead of failing",
    )
    if session:
        s = p.add_argument_group("session options (default: the target's)")
        s.add_argument("--threads", type=int, metavar="N", help="intra-op threads (0: onnxruntime chooses)")
        s.add_argument("--optimization", choices=list(OPTIMIZATION_LEVELS), help="onnxruntime graph optimization level")
        s.add_argument("--execution-mode", choices=list(EXECUTION_MODES), help="run independent nodes one at a time or at once")
        s.add_argument("--inter-threads", type=int, metavar="N", help="threads for --execution-mode parallel")
        s.add_argument("--session", metavar="FILE.json", help="session options written by `onnxforge tune` (flags above override them)")
    g = p.add_argument_group("provider options")
    g.add_argument("--cudnn-conv-algo-search", choices=["EXHAUSTIVE", "HEURISTIC", "DEFAULT"], help="CUDA: how cuDNN picks convolution algorithms")
    g.add_argument("--cuda-arena", choices=["kNextPowerOfTwo", "kSameAsRequested"], help="CUDA: how the memory arena grows")
    g.add_argument("--trt-fp16", action="store_true", help="TensorRT: allow fp16 kernels")
    g.add_argument("--trt-int8", action="store_true", help="TensorRT: int8 kernels (explicit quantization: the model's Q/DQ scales)")
    g.add_argument("--trt-cache", metavar="DIR", help="TensorRT: engine and timing cache folder (default $ONNXFORGE_CACHE/tensorrt)")
    g.add_argument(
        "--trt-profile",
        action="append",
        default=[],
        metavar="INPUT=MIN:OPT:MAX",
        help="TensorRT optimization profile for a dynamic input, e.g. input_ids=1x1:1x128:8x512 (repeatable)",
    )


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=1x3x224x224", help="an input's shape (repeatable)")
    p.add_argument(
        "--dim", action="append", default=[], metavar="SYMBOL=N", help="a symbolic dim (repeatable; default 1, 128 for sequence-like names)"
    )
    p.add_argument("--input", metavar="FILE.npz", help="input arrays by name (the others are generated)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")


def _dims(spec: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in spec.lower().split("x"))
    except ValueError:
        raise UsageError(f"bad shape {spec!r} (expected e.g. 1x3x224x224)") from None
    if any(d < 0 for d in dims):
        raise UsageError(f"bad shape {spec!r}: negative dim")
    return dims


def parse_profile(items: list[str]) -> ShapeProfile | None:
    """``--trt-profile INPUT=MIN:OPT:MAX`` items as one TensorRT optimization profile."""
    if not items:
        return None
    lo, mid, hi = {}, {}, {}
    for item in items:
        name, sep, spec = item.partition("=")
        parts = spec.split(":")
        if not sep or not name or len(parts) != 3:
            raise UsageError(f"--trt-profile expects INPUT=MIN:OPT:MAX (e.g. x=1x3x224x224:4x3x224x224:8x3x224x224), got {item!r}")
        lo[name], mid[name], hi[name] = (_dims(s) for s in parts)
    return ShapeProfile(lo, mid, hi)


def target_from_args(args: argparse.Namespace) -> Target:
    """The target the flags describe, checked against this machine (error or fallback)."""
    target = TARGETS[args.target]
    if getattr(args, "session", None):
        saved_target, config = load_session_file(args.session)
        if saved_target is not None and saved_target != target.name:
            raise UsageError(f"{args.session} holds session options for --target {saved_target}, not {target.name}")
        target = target.with_session(config)
    if hasattr(args, "threads"):
        if args.threads is not None and args.threads < 0:
            raise UsageError("--threads must be >= 0")
        target = target.with_session(
            threads=args.threads, optimization=args.optimization, execution_mode=args.execution_mode, inter_threads=args.inter_threads
        )
    if args.cudnn_conv_algo_search or args.cuda_arena:
        if "CUDAExecutionProvider" not in target.providers:
            raise UsageError(f"--cudnn-conv-algo-search and --cuda-arena are CUDA options; --target {target.name} does not use CUDA")
        target = target.with_cuda(conv_algo_search=args.cudnn_conv_algo_search, arena_extend_strategy=args.cuda_arena)
    profile = parse_profile(args.trt_profile)
    if args.trt_fp16 or args.trt_int8 or args.trt_cache or profile is not None:
        if TENSORRT_EP not in target.providers:
            raise UsageError(f"--trt-* flags are TensorRT options; --target {target.name} does not use TensorRT")
        target = target.with_tensorrt(fp16=args.trt_fp16 or None, int8=args.trt_int8 or None, cache_dir=args.trt_cache, profile=profile)
    return resolve(target, fallback_target(args.fallback))


def model_feeds(path: Path, args: argparse.Namespace) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model's graph (weights not read) and its inputs from the flags."""
    proto = modelio.read_proto(path)
    given = load_npz(args.input) if args.input else None
    return proto, run_feeds(proto, shapes=parse_shapes(args.shape), dims=parse_dims(args.dim), given=given, seed=args.seed)
