"""Roofline latency estimates: target profiles and the time of one node.

A node takes ``max(flops / compute_rate, bytes / bandwidth) + overhead``: compute-bound when
the first term wins, memory-bound otherwise. The compute rate depends on the kind of work
(dense products on matrix units vs elementwise) and on the element type.

Profiles:

* ``cpu``: this machine, calibrated once with onnxruntime on one thread
  (:mod:`onnxforge.cost.calibrate`: matrix products and convolutions by shape class, memory
  bandwidth by working-set size, per-node overhead by op class, elementwise throughput; about
  twenty seconds) and cached as JSON under ``$ONNXFORGE_CACHE`` (default ``~/.cache/onnxforge``),
  keyed by CPU model, core count and onnxruntime version (:mod:`onnxforge.runtime.machine`).
* ``h100`` / ``a100``: NVIDIA's published dense peak rates and memory bandwidth (H100 SXM5:
  67 TFLOP/s FP32, 495 TF32, 990 FP16, 1,979 INT8 TOP/s, 3.35 TB/s; A100 SXM4 80 GB: 19.5
  FP32, 156 TF32, 312 FP16, 624 INT8, 2.04 TB/s), scaled by typical achieved fractions (70% of
  matrix peak, 80% of bandwidth) plus a kernel-launch overhead of 4 us per node and 20 us per
  call.

A model's estimate is the per-call overhead plus the sum of its nodes' times.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import onnx

from onnxforge.cost.calibrate import Calibration, interpolate, op_class
from onnxforge.cost.calibrate import measure as calibrate
from onnxforge.errors import UsageError
from onnxforge.kernels.costs.linalg import panel_positions
from onnxforge.kernels.costs.registry import MATMUL, MOVEMENT
from onnxforge.runtime.machine import cache_dir, l2_cache_bytes, machine_key

log = logging.getLogger(__name__)

PROFILE_VERSION = 8


@dataclass(frozen=True)
class TargetProfile:
    """Peak rates of one target (operations and bytes per second) and per-node overhead."""

    name: str
    description: str
    matmul_fp32: float
    matmul_fp16: float
    matmul_int8: float
    vector: float
    bandwidth: float
    overhead_s: float
    source: str
    #: Nodes moving at most this many bytes run at ``cache_bandwidth`` (0: one level only).
    cache_bytes: int = 0
    cache_bandwidth: float = 0.0
    #: Fixed cost of one inference call (feeding inputs, fetching outputs, scheduling).
    run_overhead_s: float = 0.0
    #: Per-machine micro-measurements (``cpu``): rates by product shape, bandwidth by working
    #: set, overhead by op class. When present, :meth:`work_time` uses them.
    calibration: Calibration | None = None

    def compute_rate(self, kind: str, dtype_class: str) -> float:
        if kind != MATMUL:
            return self.vector
        return {"fp16": self.matmul_fp16, "int8": self.matmul_int8}.get(dtype_class, self.matmul_fp32)

    def node_time(self, kind: str, dtype_class: str, flops: int, nbytes: int) -> tuple[float, str]:
        """Seconds for one execution of a node, and ``"compute"`` or ``"memory"`` (its bound)."""
        compute = 0.0 if kind == MOVEMENT else flops / self.compute_rate(kind, dtype_class)
        in_cache = self.cache_bandwidth > 0 and nbytes <= self.cache_bytes
        memory = nbytes / (self.cache_bandwidth if in_cache else self.bandwidth)
        bound = "compute" if compute > memory else "memory"
        return max(compute, memory) + self.overhead_s, bound

    def work_time(self, work: NodeWork) -> tuple[float, str]:
        """Seconds for one execution of a node described by ``work``, and its bound. With a
        calibration: the overhead of its op class plus the slower of its product (at the rate
        measured for its shape class), its elementwise work and its memory traffic (at the
        bandwidth measured for its working-set size); else :meth:`node_time`."""
        cal = self.calibration
        if cal is None:
            return self.node_time(work.kind, work.dtype_class, work.flops, work.nbytes)
        compute = 0.0
        if work.kind == MATMUL and work.flops:
            cls, m, k, n = work.product if work.product is not None else ("gemm", 64.0, 256.0, 256.0)
            flops = float(work.flops)
            if cls == "conv1d" and cal.conv_panel > 1 and work.dtype_class != "int8":
                # the GEMM computes whole panels of output positions (the grid is indexed so too)
                padded = panel_positions(m, cal.conv_panel)
                flops, m = flops * padded / max(m, 1.0), padded
            int8_points = (cal.conv_int8 or cal.gemm_int8) if cls in ("conv", "conv1d", "depthwise", "depthwise1d") else cal.gemm_int8
            if work.dtype_class == "int8" and int8_points:
                rate = interpolate(int8_points, m, k, n)  # onnxruntime's integer kernels, measured
            else:
                rate = cal.rate(cls, m, k, n)
                if work.dtype_class == "int8":
                    rate *= cal.int8_speedup
                elif work.dtype_class == "fp16":
                    rate /= 2
            compute = flops / rate
        elif work.kind != MOVEMENT and work.flops:
            compute = work.flops / (cal.vector or self.vector)
            if cal.elementwise:
                compute = max(compute, work.elements / cal.elementwise)
        per_element = cal.per_element.get(work.per_element_key or "", 0.0)
        if per_element and work.elements:
            # measured for this very op on a cache-resident activation: transcendental GELUs,
            # 4-D transposes and SkipLayerNormalization run far below the generic rates
            compute = max(compute, work.elements * per_element)
        memory = work.nbytes / cal.bandwidth_at(work.nbytes) if work.nbytes else 0.0
        bound = "compute" if compute > memory else "memory"
        seconds = max(compute, memory) + self._streaming(work, cal)
        return seconds + cal.overhead.get(op_class(work.op_type), self.overhead_s), bound

    def _streaming(self, work: NodeWork, cal: Calibration) -> float:
        """Seconds a product pays to bring its weights in when the model's weights do not stay
        in cache between runs (:meth:`Calibration.stream_cost`, measured per input row count and
        per weight-set size: a chain of matrix-vector products over 4 MB of distinct weights ran
        3.7x slower than over one shared weight on a 2 MB-L2 machine, and about 2% slower on a
        512 KB-L2 one with a 32 MB L3; BERT-sized MLPs at 128 tokens 13-18% slower)."""
        if work.kind != MATMUL or not work.weight_bytes or not cal.stream:
            return 0.0
        rows = work.product[1] if work.product is not None else 1.0
        return work.weight_bytes * cal.stream_cost(rows, work.model_weight_bytes)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetProfile:
        d = dict(d)
        cal = d.pop("calibration", None)
        return cls(**d, calibration=Calibration.from_dict(cal) if cal else None)


@dataclass(frozen=True)
class NodeWork:
    """What the roofline needs of one node: op, kind of work, element class, FLOPs, bytes moved
    and, for products, ``(class, M, K, N)`` (class: gemm, conv, conv1d, depthwise, depthwise1d)."""

    op_type: str
    kind: str
    dtype_class: str
    flops: int
    nbytes: int
    product: tuple[str, float, float, float] | None = None
    #: Output elements (elementwise work is bounded by a per-element rate too).
    elements: int = 0
    #: :attr:`Calibration.per_element` entry measured for this op (:func:`per_element_key`).
    per_element_key: str | None = None
    #: Weight bytes this node reads, and the weight bytes of the whole model (weights that do
    #: not fit in cache are streamed from memory on every run).
    weight_bytes: int = 0
    model_weight_bytes: int = 0


_ACHIEVED_MATMUL = 0.7
_ACHIEVED_BW = 0.8
_LAUNCH_S = 4e-6
_RUN_S = 20e-6  # host-side cost of one call: input/output copies and synchronization

H100 = TargetProfile(
    name="h100",
    description="NVIDIA H100 SXM5 (published dense peaks x typical achieved fraction)",
    matmul_fp32=495e12 * _ACHIEVED_MATMUL,  # TF32 tensor cores (onnxruntime's CUDA default)
    matmul_fp16=990e12 * _ACHIEVED_MATMUL,
    matmul_int8=1979e12 * _ACHIEVED_MATMUL,
    vector=67e12 * _ACHIEVED_MATMUL,
    bandwidth=3.35e12 * _ACHIEVED_BW,
    overhead_s=_LAUNCH_S,
    source="published",
    run_overhead_s=_RUN_S,
)

A100 = TargetProfile(
    name="a100",
    description="NVIDIA A100 SXM4 80 GB (published dense peaks x typical achieved fraction)",
    matmul_fp32=156e12 * _ACHIEVED_MATMUL,
    matmul_fp16=312e12 * _ACHIEVED_MATMUL,
    matmul_int8=624e12 * _ACHIEVED_MATMUL,
    vector=19.5e12 * _ACHIEVED_MATMUL,
    bandwidth=2.039e12 * _ACHIEVED_BW,
    overhead_s=_LAUNCH_S,
    source="published",
    run_overhead_s=_RUN_S,
)

PROFILES = ("cpu", "h100", "a100")


def get_profile(name: str, *, refresh: bool = False) -> TargetProfile:
    """The profile called ``name`` (``cpu`` is measured on first use, then cached)."""
    if name == "cpu":
        return cpu_profile(refresh=refresh)
    if name == "h100":
        return H100
    if name == "a100":
        return A100
    raise UsageError(f"unknown target profile {name!r} (choose from {', '.join(PROFILES)})")


def dtype_class(elem_type: int | None) -> str:
    """``fp16`` for half types, ``int8`` for 8/4-bit integers, else ``fp32``."""
    if elem_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        return "fp16"
    if elem_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return "int8"
    return "fp32"


# -- the CPU microbenchmark -------------------------------------------------------------------


def cpu_profile(*, refresh: bool = False) -> TargetProfile:
    """This machine's one-thread onnxruntime profile (cached; measured when absent)."""
    path = cache_dir() / f"cpu-profile-{machine_key()}-v{PROFILE_VERSION}.json"
    if not refresh and path.is_file():
        try:
            return TargetProfile.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            log.warning("ignoring unreadable CPU profile cache %s", path)
    log.info("measuring the CPU profile (one-time micro-benchmarks, about twenty seconds)")
    profile = measure_cpu_profile()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(profile.to_dict(), indent=2))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot cache the CPU profile at %s: %s", path, e)
    return profile


def measure_cpu_profile() -> TargetProfile:
    """Calibrate this machine (:func:`onnxforge.cost.calibrate.measure`, about twenty seconds) and
    return the profile; its headline rates (for the plain roofline and the tables) are read off
    the calibration: a large float32 product, the int8 one, memory and L2 bandwidth."""
    cal = calibrate()
    fp32 = cal.rate("gemm", 512, 1024, 256)
    l2 = l2_cache_bytes()
    return TargetProfile(
        name="cpu",
        description=f"this CPU, onnxruntime, 1 thread ({platform.machine()}), calibrated",
        matmul_fp32=fp32,
        matmul_fp16=fp32 / 2,  # CPUs without native fp16 GEMM convert; a conservative rate
        matmul_int8=fp32 * cal.int8_speedup,
        vector=cal.vector,
        bandwidth=cal.bandwidth_at(1 << 30),
        overhead_s=cal.overhead.get("elementwise", 0.0),
        source="measured",
        cache_bytes=l2,
        cache_bandwidth=cal.bandwidth_at(l2),
        run_overhead_s=cal.run_overhead,
        calibration=cal,
    )
