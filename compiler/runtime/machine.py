"""This machine, as measurements are cached for it: the cache folder and a key naming the CPU,
its core count and the onnxruntime version (a measurement is only valid for all three)."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import onnxruntime as ort

#: Bump to invalidate every cached measurement (profiles, measured choices, probes).
CACHE_VERSION = 3


def cache_dir() -> Path:
    """``$ONNXFORGE_CACHE`` or ``~/.cache/onnxforge``."""
    env = os.environ.get("ONNXFORGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "onnxforge"


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


#: CPU flags of the x86 integer dot-product instructions that add u8 x s8 products into int32
#: without an int16 step: with any of them onnxruntime's uint8 x int8 kernels cannot saturate.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    return frozenset((_cpuinfo("flags") or "").split())


def vector_isa() -> str:
    """The widest x86 vector extension this CPU has, with VNNI when present (both change the
    rates onnxruntime's kernels reach): "AVX-512 + VNNI", "AVX2", ...; "" where the flags do
    not say (other architectures, no ``/proc/cpuinfo``)."""
    flags = cpu_flags()
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags), "")
    return widest + (" + VNNI" if widest and flags & {"avx512_vnni", "avx_vnni"} else "")


def u8s8_saturates() -> bool:
    """Whether onnxruntime's uint8 x int8 CPU kernels can saturate on this machine: an x86 CPU
    without VNNI, where AVX2 and AVX-512BW multiply-add pairs of u8 x s8 products into int16
    (``vpmaddubsw``): 2 x 255 x 127 overflows it, and the products of large activations with
    large weights are clipped (measured on an AVX2 EPYC: a MatMul + bias 4.5 % off, Silero VAD's
    state outputs at cosine 0.77-0.85). Weights quantized to 7 bits (+-63) cannot overflow:
    onnxruntime's own quantizer calls that ``reduce_range``. ``$ONNXFORGE_INT8_REDUCE_RANGE``
    (``0``/``1``) overrides the detection."""
    env = os.environ.get("ONNXFORGE_INT8_REDUCE_RANGE")
    if env in ("0", "1"):
        return env == "1"
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = cpu_flags()
    return bool(flags) and not (flags & _VNNI_FLAGS)


def machine_key() -> str:
    """A short hash of (CPU model, core count, onnxruntime version, cache version)."""
    raw = f"{cpu_name()}|{os.cpu_count()}|{ort.__version__}|{CACHE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def l2_cache_bytes() -> int:
    """The per-core L2 cache size (1 MiB when the system does not say)."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip().upper()
        if text.endswith("K"):
            return int(text[:-1]) << 10
        if text.endswith("M"):
            return int(text[:-1]) << 20
        return int(text)
    except (OSError, ValueError):
        return 1 << 20
