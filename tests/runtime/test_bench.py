"""bench: the figures, the documented JSON, and --compare against an independent timing loop."""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import onnx
import pytest
from lowering_models import matmuls

from onnxforge.cli import main
from onnxforge.runtime import bench as rb
from onnxforge.runtime.session import create_session
from onnxforge.runtime.target import TARGETS

ONE_THREAD = TARGETS["cpu"].with_session(threads=1)

#: bench --json's keys, level by level: the documented schema (docs/LOWERING.md). A change here
#: is a schema change: bump rb.SCHEMA and the docs with it.
TOP = {"schema", "onnxruntime", "machine", "target", "settings", "models", "comparison", "warnings"}
MACHINE = {"cpu", "cores", "system"}
TARGET = {"name", "requested", "providers", "provider_options", "session"}
SESSION = {"threads", "optimization", "execution_mode", "inter_threads"}
SETTINGS = {"mode", "warmup", "min_runs", "max_runs", "seconds"}
MODEL = {"path", "inputs", "providers", "session_create_ms", "memory", "warmup_runs", "runs", "latency_ms", "throughput"}
MEMORY = {"method", "session_peak_bytes", "process_peak_bytes"}
LATENCY = {"mean", "p50", "p90", "p99", "min", "max", "stdev"}
THROUGHPUT = {"batch", "runs_per_s", "samples_per_s"}
COMPARISON = {"baseline", "other", "ratio_p50", "speedup", "paired_median", "ci95", "rounds"}


def _check_model(m: dict) -> None:
    assert set(m) == MODEL and set(m["memory"]) == MEMORY and set(m["latency_ms"]) == LATENCY and set(m["throughput"]) == THROUGHPUT
    lat = m["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert m["runs"] >= 3 and m["session_create_ms"] > 0 and m["memory"]["process_peak_bytes"] > 0
    assert m["throughput"]["runs_per_s"] == pytest.approx(1e3 / lat["mean"])
    for spec in m["inputs"].values():
        assert set(spec) == {"shape", "dtype"}


def test_bench_json_is_the_documented_schema(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(2, 32, dynamic=True), src)
    assert main(["bench", str(src), "--json", "--threads", "1", "--runs", "5", "--seconds", "0", "--dim", "batch=4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == TOP and doc["schema"] == "onnxforge.bench/1" and set(doc["machine"]) == MACHINE
    assert set(doc["target"]) == TARGET and set(doc["target"]["session"]) == SESSION and set(doc["settings"]) == SETTINGS
    assert doc["target"]["session"]["threads"] == 1 and doc["target"]["requested"] == "cpu"
    assert doc["comparison"] is None and doc["warnings"] == [] and len(doc["models"]) == 1
    m = doc["models"][0]
    _check_model(m)
    assert m["inputs"] == {"x": {"shape": [4, 32], "dtype": "float32"}} and m["throughput"]["batch"] == 4
    assert m["runs"] >= 5 and m["warmup_runs"] == 5


def test_bench_compare_json_and_input_file(tmp_path, capsys):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(matmuls(1, 32), a)
    onnx.save(matmuls(2, 32), b)
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.ones((1, 32), np.float32))
    assert main(["bench", str(a), "--compare", str(b), "--json", "--threads", "1", "--runs", "5", "--seconds", "0.2", "--input", str(npz)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == TOP and doc["settings"]["mode"] == "interleaved" and len(doc["models"]) == 2
    for m in doc["models"]:
        _check_model(m)
    c = doc["comparison"]
    assert set(c) == COMPARISON and c["baseline"] == str(a) and c["other"] == str(b)
    assert c["ci95"][0] <= c["ratio_p50"] <= c["ci95"][1] and c["speedup"] == pytest.approx(1 / c["ratio_p50"])
    assert 5 <= c["rounds"] <= doc["models"][0]["runs"] and c["rounds"] <= doc["models"][1]["runs"]


def test_bench_text_output_and_bad_flags(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(1, 16), src)
    assert main(["bench", str(src), "--runs", "3", "--seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "latency ms   p50" in out and "runs/s" in out and "ms to create" in out
    assert main(["bench", str(src), "--runs", "0"]) == 2
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.ones(3))
    assert main(["bench", str(src), "--input", str(bad)]) == 2
    assert "not inputs of the model" in capsys.readouterr().err


def test_latency_stats_percentiles():
    s = rb.LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])
    assert (s.runs, s.min_ms, s.max_ms) == (100, 1.0, 100.0)
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)


def test_interleaving_rotates_the_first_session():
    order: list[int] = []

    class Fake:
        def __init__(self, i: int) -> None:
            self.i = i

        def get_outputs(self):  # type: ignore[no-untyped-def]
            return []

        def run(self, names, feeds):  # type: ignore[no-untyped-def]
            order.append(self.i)

    slow = rb.interleaved_times([Fake(0), Fake(1), Fake(2)], {}, rounds=3, warmup=1, max_rounds=3, turn_s=0.0)
    assert [len(t) for t in slow] == [3, 3, 3]  # slower than a turn: an untimed run and one timed run per turn
    assert order[3:] == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 2, 0, 0, 1, 1]
    order.clear()
    fast = rb.interleaved_rounds([Fake(0), Fake(1)], {}, rounds=2, warmup=1, max_rounds=2, turn_s=1.0)
    # faster than a turn: an untimed run, then up to MAX_TURN_RUNS timed ones, each turn
    assert [[len(turn) for turn in r] for r in fast] == [[rb.MAX_TURN_RUNS] * 2] * 2
    k = rb.MAX_TURN_RUNS + 1
    assert order[2:] == [0] * k + [1] * k + [1] * k + [0] * k


def test_compare_agrees_with_an_independent_timing_loop():
    """The ratio bench --compare reports against a plain loop written here (blocks of 10 runs of
    each model in turn after an untimed one, perf_counter, median), on one thread: 1 vs 3
    MatMuls of 256x256 on 64 rows: compute-bound runs of tens of microseconds, 768 KB of weights
    at most, resident in any L2 (1-row runs of a few microseconds, or weight sets near the
    cache's size, moved this ratio 20-30% from one loop to the other). (A loop that alternates
    run by run times both cold: each evicts the other's weights from the caches.)"""
    small, big = matmuls(1, 256, rows=64), matmuls(3, 256, seed=1, rows=64)
    feeds = {"x": np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)}
    report = rb.compare([small, big], ONE_THREAD, [feeds, feeds], warmup=3, min_runs=30, max_runs=300, seconds=1.0)
    mine = report.ratios[0].ratio_p50

    sa = create_session(small, optimization="all", threads=1)
    sb = create_session(big, optimization="all", threads=1)
    ta, tb = [], []
    for _ in range(5):
        sa.run(None, feeds)
        sb.run(None, feeds)
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline or len(ta) < 30:
        for sess, times in ((sa, ta), (sb, tb)):
            sess.run(None, feeds)  # untimed: the first run after the other model's finds cold caches
            for _ in range(10):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t0)
    independent = statistics.median(tb) / statistics.median(ta)
    assert 1.5 < independent
    assert mine == pytest.approx(independent, rel=0.2), (mine, independent)


def test_memory_probe_sees_a_large_allocation():
    probe = rb.MemoryProbe()
    probe.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    probe.stop()
    del block
    if probe.method != "vmhwm-reset":
        pytest.skip("no resettable resident high-water mark here (not Linux)")
    assert probe.growth >= 60 * 2**20
