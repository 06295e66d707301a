"""Can this machine run a target? The providers of the installed onnxruntime and the GPU.

``--target cuda`` needs two things: an onnxruntime build with ``CUDAExecutionProvider``
(the ``onnxruntime-gpu`` wheel; the plain ``onnxruntime`` wheel is CPU-only) and a GPU that
CUDA can see. onnxruntime-gpu lists its providers whether or not there is a GPU and, when the
CUDA provider cannot start, silently runs everything on the CPU; so both are checked here,
before a session is made, and :func:`check_session` checks the session afterwards.

:func:`resolve` returns the target to run on, or raises :class:`TargetUnavailable` (exit code
2) with one of the one-line messages of :data:`MESSAGES`, documented word for word in
``docs/LOWERING.md``; with a fallback target it logs a warning and returns the fallback.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
from collections.abc import Sequence

import onnxruntime as ort

from onnxforge.errors import UsageError
from onnxforge.runtime.target import CPU_EP, CUDA_EP, TARGETS, TENSORRT_EP, Target

log = logging.getLogger(__name__)


class TargetUnavailable(UsageError):
    """The target's providers or its GPU are missing here (exit code 2)."""


#: The errors, per (target name, what is missing). ``{fallback}`` is the flag that would run
#: the model anyway. docs/LOWERING.md quotes these; a test checks that the two agree.
MESSAGES = {
    ("cuda", "provider"): (
        "--target cuda needs onnxruntime's CUDAExecutionProvider, which the installed onnxruntime "
        "does not have: pip uninstall onnxruntime && pip install onnxruntime-gpu "
        "on a machine with an NVIDIA GPU, or pass --fallback cpu"
    ),
    ("cuda", "gpu"): (
        "--target cuda needs an NVIDIA GPU, and CUDA finds none on this machine "
        "(onnxruntime-gpu is installed): run on a machine with an NVIDIA GPU and its driver, or pass --fallback cpu"
    ),
    ("tensorrt", "provider"): (
        "--target tensorrt needs onnxruntime's TensorrtExecutionProvider, which the installed onnxruntime "
        "does not have: pip install onnxruntime-gpu tensorrt (in place of onnxruntime) "
        "on a machine with an NVIDIA GPU, or pass --fallback cuda or --fallback cpu"
    ),
    ("tensorrt", "gpu"): (
        "--target tensorrt needs an NVIDIA GPU, and CUDA finds none on this machine "
        "(onnxruntime-gpu is installed): run on a machine with an NVIDIA GPU and its driver, or pass --fallback cpu"
    ),
}


def available_providers() -> list[str]:
    """The execution providers of the installed onnxruntime build."""
    return list(ort.get_available_providers())


@functools.lru_cache(maxsize=1)
def gpu_count() -> int:
    """How many GPUs the CUDA driver sees (0 without a driver). Asks libcuda directly, so it
    costs a few milliseconds and needs neither torch nor a CUDA toolkit."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
        except AttributeError:
            return 0
        return int(count.value)
    return 0


@dataclasses.dataclass(frozen=True)
class Availability:
    """Why a target can or cannot run here. ``missing`` is ``""`` (it can), ``"provider"`` or
    ``"gpu"``; ``provider`` names the first missing provider."""

    target: str
    missing: str = ""
    provider: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    def message(self) -> str:
        known = MESSAGES.get((self.target, self.missing))
        if known is not None:
            return known
        if self.missing == "gpu":
            return f"--target {self.target} needs an NVIDIA GPU, and CUDA finds none on this machine"
        return (
            f"--target {self.target} needs onnxruntime's {self.provider}, which the installed onnxruntime "
            "does not have: install an onnxruntime build with it, or pass --fallback cpu"
        )


def availability(
    target: Target, *, providers: Sequence[str] | None = None, gpus: int | None = None
) -> Availability:
    """Whether ``target`` can run here (``providers``/``gpus`` default to this machine's)."""
    have = available_providers() if providers is None else list(providers)
    missing = target.missing_providers(have)
    if missing:
        return Availability(target.name, "provider", missing[0])
    if target.uses_gpu and (gpu_count() if gpus is None else gpus) == 0:
        return Availability(target.name, "gpu", target.primary_provider)
    return Availability(target.name)


def resolve(
    target: Target,
    fallback: Target | None = None,
    *,
    providers: Sequence[str] | None = None,
    gpus: int | None = None,
) -> Target:
    """``target`` when it can run here. Otherwise :class:`TargetUnavailable` with the documented
    one-line message, or, with ``fallback``, a warning and ``fallback`` (checked the same way;
    it keeps ``target``'s session options)."""
    found = availability(target, providers=providers, gpus=gpus)
    if found.ok:
        return target
    if fallback is None:
        raise TargetUnavailable(found.message())
    chosen = resolve(fallback, None, providers=providers, gpus=gpus)
    log.warning(
        "--target %s cannot run here (%s); running on --target %s as --fallback asks",
        target.name,
        f"no {found.provider} in this onnxruntime" if found.missing == "provider" else "no GPU",
        chosen.name,
    )
    return chosen.with_session(target.session)


def check_session(target: Target, session_providers: Sequence[str], *, strict: bool = True) -> None:
    """After a session is made: onnxruntime drops a provider that fails to start (no GPU, a
    missing cuDNN or TensorRT library) and runs on the next one without an error. With
    ``strict`` that is a :class:`TargetUnavailable`; otherwise a warning."""
    if target.primary_provider in session_providers:
        return
    msg = (
        f"onnxruntime could not start {target.primary_provider} for --target {target.name} "
        f"(the session runs on {', '.join(session_providers) or 'nothing'}): check the GPU driver and the "
        "CUDA, cuDNN and TensorRT libraries onnxruntime-gpu needs, or pass --fallback cpu"
    )
    if strict:
        raise TargetUnavailable(msg)
    log.warning("%s", msg)


def fallback_target(name: str | None) -> Target | None:
    """The ``--fallback NAME`` target (None: no fallback)."""
    if name is None:
        return None
    if name not in TARGETS:
        raise UsageError(f"unknown --fallback target {name!r} (choose from {', '.join(TARGETS)})")
    return TARGETS[name]


__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "MESSAGES",
    "TENSORRT_EP",
    "Availability",
    "TargetUnavailable",
    "availability",
    "available_providers",
    "check_session",
    "fallback_target",
    "gpu_count",
    "resolve",
]
