"""Roofline latency estimates: target profiles and the time of one node.

A node takes ``max(flops / compute_rate, bytes / bandwidth) + overhead``: compute-bound when
the first term wins, memory-bound otherwise. The compute rate depends on the kind of work
(dense products on matrix units vs elementwise) and on the element type.

Profiles:

* ``cpu``: this machine, measured once with onnxruntime on one thread (a float32 and an int8
  matrix product, a large Add for memory bandwidth and a cache-resident one for cache
  bandwidth, a cache-resident Mul for elementwise throughput, a chain of tiny ops for the
  per-node overhead; the cache level is the core's L2 size) and cached as JSON under
  ``$ONNXFORGE_CACHE`` (default ``~/.cache/onnxforge``), keyed by CPU model, core count and
  onnxruntime version.
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
from pathlib import Path

import numpy as np
import onnx

from onnxforge.errors import UsageError
from onnxforge.kernels.costs.registry import MATMUL, MOVEMENT
from onnxforge.runtime.machine import cache_dir, machine_key
from onnxforge.runtime.options import median_time
from onnxforge.runtime.session import create_session

log = logging.getLogger(__name__)

PROFILE_VERSION = 3


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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
            return TargetProfile(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            log.warning("ignoring unreadable CPU profile cache %s", path)
    log.info("measuring the CPU profile (one-time microbenchmark, a few seconds)")
    profile = measure_cpu_profile()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(profile.to_dict(), indent=2))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot cache the CPU profile at %s: %s", path, e)
    return profile


def _session(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    return create_session(model, optimization="all")


def _graph(nodes, inputs, outputs, inits=()):  # type: ignore[no-untyped-def]
    from onnx import helper

    g = helper.make_graph(nodes, "probe", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _chain_time(vi, op: str, n: int, et: int, short: int, long: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per node of a chain of ``op`` on ``n``-element tensors (Add adds the chain input
    to the running value, so it reads two tensors and writes one)."""
    return _chain_fit(vi, op, n, et, short, long)[0]


def _chain_fit(vi, op: str, n: int, et: int, short: int, long: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds per node, seconds per run outside the nodes) of a chain of ``op``."""
    from onnx import helper

    def chain(length: int) -> float:
        nodes = []
        for i in range(length):
            ins = [f"t{i}", "t0"] if op == "Add" else [f"t{i}"]
            nodes.append(helper.make_node(op, ins, [f"t{i + 1}"]))
        model = _graph(nodes, [vi("t0", et, [n])], [vi(f"t{length}", et, [n])])
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 1e-3
        return median_time(_session(model), {"t0": x}, 15 if n > 1 << 20 else 41)

    t_short, t_long = chain(short), chain(long)
    per_node = max((t_long - t_short) / (long - short), 1e-9)
    return per_node, max(t_short - short * per_node, 0.0)


def measure_cpu_profile() -> TargetProfile:
    """Run the microbenchmarks (a few seconds) and return the measured profile."""
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    f32 = TP.FLOAT

    def vi(name: str, et: int, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, et, shape)

    # float32 matrix product
    m, k, n = 256, 1024, 1024
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    mm = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", f32, [m, k])], [vi("y", f32, [m, n])], [w])
    t = median_time(_session(mm), {"x": rng.standard_normal((m, k)).astype(np.float32)}, 7)
    matmul_fp32 = 2 * m * k * n / t

    # int8 matrix product (uint8 activations x int8 weights, as quantized models run it)
    wq = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "w")
    mmi = _graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
        [vi("x", TP.UINT8, [m, k])],
        [vi("y", TP.INT32, [m, n])],
        [wq],
    )
    t = median_time(_session(mmi), {"x": rng.integers(0, 255, (m, k), dtype=np.uint8)}, 7)
    matmul_int8 = 2 * m * k * n / t

    # Per-node times come from the difference between a long and a short chain of the same op,
    # which cancels the fixed cost of a session run.
    big, small = 1 << 23, 1 << 15
    overhead, run_overhead = _chain_fit(vi, "Relu", 1, f32, 8, 72)
    bandwidth = 3 * 4 * big / _chain_time(vi, "Add", big, f32, 2, 6)
    cache_bandwidth = 3 * 4 * small / max(_chain_time(vi, "Add", small, f32, 8, 40) - overhead, 1e-9)
    vector = 4 * small / max(_chain_time(vi, "Sigmoid", small, f32, 8, 40) - overhead, 1e-9)

    return TargetProfile(
        name="cpu",
        description=f"this CPU, onnxruntime, 1 thread ({platform.machine()})",
        matmul_fp32=matmul_fp32,
        matmul_fp16=matmul_fp32 / 2,  # CPUs without native fp16 GEMM convert; a conservative rate
        matmul_int8=matmul_int8,
        vector=vector,
        bandwidth=bandwidth,
        overhead_s=overhead,
        source="measured",
        cache_bytes=_l2_bytes(),
        cache_bandwidth=max(cache_bandwidth, bandwidth),
        run_overhead_s=run_overhead,
    )


def _l2_bytes() -> int:
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
