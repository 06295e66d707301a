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


def cpu_name() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def machine_key() -> str:
    """A short hash of (CPU model, core count, onnxruntime version, cache version)."""
    raw = f"{cpu_name()}|{os.cpu_count()}|{ort.__version__}|{CACHE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
