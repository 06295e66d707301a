"""The Target carries session options, provider options and EPContext export, and nothing
else builds them."""

from __future__ import annotations

import json

import pytest

from onnxforge.errors import UsageError
from onnxforge.runtime.options import deployment_options
from onnxforge.runtime.session import deployment_providers
from onnxforge.runtime.target import (
    CUDA_EP,
    SESSION_FILE_SCHEMA,
    TARGETS,
    TENSORRT_EP,
    SessionConfig,
    ShapeProfile,
    load_session_file,
)


def test_session_config_validates_and_round_trips():
    c = SessionConfig(threads=2, optimization="extended", execution_mode="parallel", inter_threads=2)
    assert SessionConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert c.replace(threads=None, optimization="all") == SessionConfig(2, "all", "parallel", 2)
    for bad in ({"threads": -1}, {"optimization": "max"}, {"execution_mode": "async"}):
        with pytest.raises(UsageError):
            SessionConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown session option"):
        SessionConfig.from_json({"threads": 1, "intra": 2})


def test_deployment_options_follow_the_config():
    so = deployment_options(SessionConfig(threads=3, optimization="basic", execution_mode="parallel", inter_threads=2))
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 2
    assert str(so.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
    assert str(so.execution_mode).endswith("ORT_PARALLEL")
    seq = deployment_options(SessionConfig(inter_threads=4))  # inter threads only matter in parallel mode
    assert seq.inter_op_num_threads == 1 and str(seq.execution_mode).endswith("ORT_SEQUENTIAL")


def test_every_target_defaults_to_all_optimizations_and_onnxruntime_threads():
    for t in TARGETS.values():
        assert t.session == SessionConfig(threads=0, optimization="all", execution_mode="sequential")
        assert t.describe()["providers"] == list(t.providers)


def test_cuda_and_tensorrt_provider_options():
    cuda = TARGETS["cuda"].with_cuda(conv_algo_search="HEURISTIC", arena_extend_strategy="kSameAsRequested", gpu_mem_limit=1 << 30)
    opts = dict(cuda.provider_list())[CUDA_EP]
    assert opts == {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(1 << 30)}
    with pytest.raises(UsageError):
        TARGETS["cuda"].with_cuda(conv_algo_search="FAST")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="does not use"):
        TARGETS["cpu"].with_tensorrt(fp16=True)

    profile = ShapeProfile({"ids": (1, 1)}, {"ids": (1, 128)}, {"ids": (8, 512)})
    trt = TARGETS["tensorrt"].with_tensorrt(fp16=True, int8=True, cache_dir="/tmp/trt", profile=profile, ep_context="m_ctx.onnx", ep_context_embed=True)
    o = dict(trt.provider_list())[TENSORRT_EP]
    assert o["trt_fp16_enable"] == "True" and o["trt_int8_enable"] == "True"
    assert o["trt_engine_cache_path"] == o["trt_timing_cache_path"] == "/tmp/trt"
    assert (o["trt_profile_min_shapes"], o["trt_profile_opt_shapes"], o["trt_profile_max_shapes"]) == ("ids:1x1", "ids:1x128", "ids:8x512")
    assert trt.session_config_entries() == {"ep.context_enable": "1", "ep.context_file_path": "m_ctx.onnx", "ep.context_embed_mode": "1"}
    assert TARGETS["tensorrt"].session_config_entries() == {}
    with pytest.raises(UsageError, match="min <= opt <= max"):
        ShapeProfile({"ids": (1, 256)}, {"ids": (1, 128)}, {"ids": (1, 512)})
    with pytest.raises(UsageError, match="same inputs"):
        ShapeProfile({"a": (1,)}, {"b": (1,)}, {"a": (1,)})


def test_tensorrt_caches_default_to_the_onnxforge_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_CACHE", str(tmp_path))
    opts = dict(deployment_providers(TARGETS["tensorrt"]))[TENSORRT_EP]
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path / "tensorrt")
    mine = dict(deployment_providers(TARGETS["tensorrt"].with_tensorrt(cache_dir="/x")))[TENSORRT_EP]
    assert mine["trt_engine_cache_path"] == "/x"


def test_session_file(tmp_path):
    good = tmp_path / "m.session.json"
    good.write_text(json.dumps({"schema": SESSION_FILE_SCHEMA, "target": "cpu", "session": {"threads": 1, "optimization": "extended"}}))
    assert load_session_file(good) == ("cpu", SessionConfig(threads=1, optimization="extended"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"threads": 1}))
    with pytest.raises(UsageError, match="not a session-options file"):
        load_session_file(bad)
