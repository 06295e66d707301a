"""Target profiles: the roofline arithmetic and the cached CPU measurement."""

from __future__ import annotations

import pytest

from onnxforge.cost import roofline
from onnxforge.cost.roofline import H100, TargetProfile, get_profile
from onnxforge.errors import UsageError
from onnxforge.kernels.costs.registry import MATMUL, MOVEMENT, VECTOR


def _profile(**kw: float) -> TargetProfile:
    base = dict(
        name="t", description="test", matmul_fp32=1e9, matmul_fp16=2e9, matmul_int8=4e9, vector=1e8,
        bandwidth=1e9, overhead_s=1e-6, source="test",
    )
    base.update(kw)
    return TargetProfile(**base)  # type: ignore[arg-type]


def test_node_time_is_the_slower_of_compute_and_memory_plus_overhead() -> None:
    p = _profile()
    t, bound = p.node_time(MATMUL, "fp32", flops=2_000_000, nbytes=1000)
    assert bound == "compute" and t == pytest.approx(2e-3 + 1e-6)
    t, bound = p.node_time(MATMUL, "int8", flops=2_000_000, nbytes=1000)
    assert t == pytest.approx(0.5e-3 + 1e-6)
    t, bound = p.node_time(VECTOR, "fp32", flops=10, nbytes=1_000_000)
    assert bound == "memory" and t == pytest.approx(1e-3 + 1e-6)
    t, bound = p.node_time(MOVEMENT, "fp32", flops=10**9, nbytes=0)
    assert t == pytest.approx(1e-6)


def test_cache_level_bandwidth_applies_to_small_nodes() -> None:
    p = _profile(cache_bytes=1000, cache_bandwidth=1e10)
    assert p.node_time(VECTOR, "fp32", 0, 1000)[0] == pytest.approx(1e-7 + 1e-6)
    assert p.node_time(VECTOR, "fp32", 0, 1001)[0] == pytest.approx(1001e-9 + 1e-6)


def test_published_profiles_and_unknown_names() -> None:
    assert get_profile("h100") is H100 and H100.matmul_int8 > H100.matmul_fp16 > H100.matmul_fp32
    assert get_profile("a100").bandwidth < H100.bandwidth
    with pytest.raises(UsageError):
        get_profile("tpu")


def test_cpu_profile_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch) -> None:
    calls = []

    def fake() -> TargetProfile:
        calls.append(1)
        return _profile(name="cpu", source="measured")

    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(roofline, "measure_cpu_profile", fake)
    first = roofline.cpu_profile()
    second = roofline.cpu_profile()
    assert first == second and len(calls) == 1
    assert len(list(tmp_path.glob("cpu-profile-*.json"))) == 1
    roofline.cpu_profile(refresh=True)
    assert len(calls) == 2
    next(tmp_path.glob("cpu-profile-*.json")).write_text("{not json")
    assert roofline.cpu_profile().name == "cpu" and len(calls) == 3  # unreadable cache: re-measured
