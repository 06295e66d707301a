"""Range collection with onnxruntime: exactness, streaming, the four methods, and refusals."""

from __future__ import annotations

import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from calib_models import CountingReader, ListReader, identity, mlp, one_line, with_if

from onnxforge.calibration import collect_ranges, from_reader, model_inputs, synthetic_data
from onnxforge.calibration.collect import exposed_model
from onnxforge.calibration.histogram import StreamingHistogram
from onnxforge.calibration.ranges import mse_symmetric_errors, scale_zero_point
from onnxforge.errors import ModelError, UsageError

METHODS = ["minmax", "percentile", "entropy", "mse"]


def _numpy_mlp(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    c = onnx.numpy_helper.to_array(model.graph.initializer[1])
    h = x @ w
    r = np.maximum(h, 0)
    return {"x": x, "h": h, "r": r, "y": r + c, "W": w}


def test_minmax_is_exact() -> None:
    model = mlp()
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32) * (i + 1)} for i in range(9)]
    names = ["h", "r", "y", "x", "W"]
    ranges = collect_ranges(model, names, ListReader(feeds), "minmax")
    assert list(ranges) == names
    ref = [_numpy_mlp(model, f["x"]) for f in feeds]
    for name in ["h", "r", "y", "x"]:
        allv = np.concatenate([o[name].ravel() for o in ref])
        assert ranges[name].min == pytest.approx(float(allv.min()), rel=1e-6), name
        assert ranges[name].max == pytest.approx(float(allv.max()), rel=1e-6), name
        assert ranges[name].count == allv.size
        assert ranges[name].observed_min == ranges[name].min and ranges[name].histogram is None
    w = ref[0]["W"]
    assert (ranges["W"].min, ranges["W"].max, ranges["W"].count) == (float(w.min()), float(w.max()), w.size)
    assert ranges["r"].min == 0.0


def test_collect_consumes_the_reader_lazily() -> None:
    """Each batch is read only after the previous one went through: nothing is gathered first."""
    reader = CountingReader(50, shape=(3, 4))
    seen: list[tuple[int, int, int | None]] = []
    ranges = collect_ranges(
        mlp(), ["h"], from_reader(reader), "entropy", progress=lambda done, total: seen.append((done, reader.calls, total))
    )
    assert [s[0] for s in seen] == list(range(1, 51))
    assert all(calls == done for done, calls, _ in seen)  # batch k was requested just before progress k
    assert all(total is None for *_, total in seen)
    assert reader.calls == 51 and ranges["h"].count == 50 * 3 * 3


def test_collect_memory_is_bounded_by_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """50 batches of 1 MiB: nothing is concatenated or kept from one batch to the next.

    tracemalloc sees numpy allocations made from Python (feeds, conversions, any concatenation);
    onnxruntime's output buffers are not traced, so weak references check that every output
    array is released before the next batch is read.
    """
    model = identity(shape=["N", 65536])
    reader = CountingReader(50, shape=(4, 65536))  # 1 MiB of float32 per batch
    refs: list[weakref.ref[np.ndarray]] = []
    alive: list[int] = []
    original = StreamingHistogram.add

    def add(self: StreamingHistogram, x: np.ndarray) -> np.ndarray:
        refs.append(weakref.ref(x))
        return original(self, x)

    monkeypatch.setattr(StreamingHistogram, "add", add)
    tracemalloc.start()
    try:
        ranges = collect_ranges(
            model, ["t"], from_reader(reader), "percentile",
            progress=lambda done, total: alive.append(sum(r() is not None for r in refs)),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ranges["t"].count == 50 * 4 * 65536 and len(refs) == 50
    assert alive == [0] * 50  # each batch's output was gone by the time the batch was done
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB for 50 MiB of data"


def _outlier_batches(n_batches: int = 40, size: int = 50000) -> list[dict[str, np.ndarray]]:
    """2M unit-normal values and two outliers (40 and -35) in batch 17."""
    rng = np.random.default_rng(11)
    feeds = []
    for i in range(n_batches):
        x = rng.standard_normal((1, size)).astype(np.float32)
        if i == 17:
            x[0, :2] = [40.0, -35.0]
        feeds.append({"x": x})
    return feeds


@pytest.mark.parametrize("symmetric", [False, True])
def test_histogram_methods_clip_outliers(symmetric: bool) -> None:
    feeds = _outlier_batches()
    model = identity(shape=[1, 50000])
    data = np.concatenate([f["x"].ravel() for f in feeds])
    amax = float(np.abs(data).max())
    got = {
        m: collect_ranges(model, ["t"], ListReader(feeds), m, symmetric=symmetric)["t"] for m in METHODS
    }
    assert (got["minmax"].min, got["minmax"].max) == (-35.0, 40.0)
    for m in ["percentile", "entropy", "mse"]:
        r = got[m]
        assert data.min() <= r.min <= 0 <= r.max <= data.max(), (m, r.min, r.max)
        assert max(-r.min, r.max) <= amax
        assert r.max < 0.25 * amax and -r.min < 0.25 * amax, (m, r.min, r.max)  # outliers clipped
        assert r.max > 2.5 and r.min < -2.5, (m, r.min, r.max)  # ... but not the bulk of a unit normal
        assert 0 < r.clipped < 1e-3
        assert r.histogram is not None and r.histogram.total == data.size
        assert (r.observed_min, r.observed_max) == (-35.0, 40.0)
    if symmetric:
        assert all(got[m].min == -got[m].max for m in ["percentile", "entropy", "mse"])


def _quantization_sse(data: np.ndarray, lo: float, hi: float, symmetric: bool) -> float:
    """Actual squared error of quantizing ``data`` to the grid of [lo, hi]."""
    qtype = "int8" if symmetric else "uint8"
    scale, zp = scale_zero_point(lo, hi, qtype, symmetric)
    qmin, qmax = (-127, 127) if symmetric else (0, 255)
    q = np.clip(np.round(data / scale) + zp, qmin, qmax)
    return float(np.sum(((q - zp) * scale - data) ** 2))


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_minimizes_the_actual_quantization_error(symmetric: bool) -> None:
    feeds = _outlier_batches(n_batches=20)
    data = np.concatenate([f["x"].ravel() for f in feeds]).astype(np.float64)
    model = identity(shape=[1, 50000])
    ranges = {m: collect_ranges(model, ["t"], ListReader(feeds), m, symmetric=symmetric)["t"] for m in METHODS}
    errors = {m: _quantization_sse(data, r.min, r.max, symmetric) for m, r in ranges.items()}
    assert errors["mse"] <= min(errors.values()) * 1.001, errors
    # The error model behind the search agrees with real quantization.
    r = ranges["mse"]
    assert r.histogram is not None
    if symmetric:
        t, predicted = mse_symmetric_errors(r.histogram)
        for k in [len(t) // 20, len(t) // 6, len(t) // 2]:
            assert predicted[k] == pytest.approx(_quantization_sse(data, -t[k], t[k], True), rel=0.01)


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((1, 20000)).astype(np.float32) * 2 + 1} for _ in range(10)]
    data = np.concatenate([f["x"].ravel() for f in feeds])
    model = identity(shape=[1, 20000])
    r = collect_ranges(model, ["t"], ListReader(feeds), "percentile", percentile=99.0)["t"]
    lo, hi = np.percentile(data, [0.5, 99.5])
    width = r.histogram.width if r.histogram else 0
    assert abs(r.min - lo) < width and abs(r.max - hi) < width
    r = collect_ranges(model, ["t"], ListReader(feeds), "percentile", percentile=99.0, symmetric=True)["t"]
    t = np.percentile(np.abs(data), 99.0)
    assert abs(r.max - t) < width and r.min == -r.max


def test_relu_output_range_starts_at_zero() -> None:
    feeds = [{"x": np.random.default_rng(i).standard_normal((64, 4)).astype(np.float32)} for i in range(8)]
    for m in METHODS:
        r = collect_ranges(mlp(), ["r"], ListReader(feeds), m)["r"]
        assert r.min == 0.0 and r.max > 0, m
        scale, zp = r.scale_zero_point("uint8")
        assert zp == 0 and scale > 0


def test_tensors_inside_if_branches_are_ranged_over_the_batches_that_ran_them(caplog: pytest.LogCaptureFixture) -> None:
    model = with_if()
    before = model.SerializeToString()
    x1, x2 = np.array([1.0, -2.0, 3.0], np.float32), np.array([5.0, 1.0, -1.0], np.float32)
    feeds = [{"x": x1, "c": np.array(True)}, {"x": x2, "c": np.array(False)}]
    ranges = collect_ranges(model, ["s", "t_out", "e_out", "y"], ListReader(feeds), "minmax")
    assert (ranges["s"].min, ranges["s"].max) == (-4.0, 10.0)
    assert (ranges["t_out"].min, ranges["t_out"].max) == (-8.0, 12.0)  # first batch only: s + s
    assert (ranges["e_out"].min, ranges["e_out"].max) == (-1.0, 5.0)  # second batch only: s - x
    assert (ranges["y"].min, ranges["y"].max) == (-8.0, 12.0)
    assert model.SerializeToString() == before
    with caplog.at_level("INFO", logger="onnxforge.calibration.collect"):
        ranges = collect_ranges(model, ["t_out", "e_out"], ListReader(feeds[:1]), "minmax")
    assert set(ranges) == {"t_out"}  # the else branch never ran: no range, not [0, 0]
    assert any("e_out" in rec.message and "never ran" in rec.message for rec in caplog.records)
    with pytest.raises(UsageError, match="tensor 'nope' is not in the model") as e:
        collect_ranges(model, ["nope"], ListReader(feeds))
    one_line(e)


def test_option_and_data_errors_are_one_line() -> None:
    model = mlp()
    ok = [{"x": np.zeros((1, 4), np.float32)}]
    cases: list[tuple[dict[str, Any], list[dict[str, np.ndarray]], type[Exception], str]] = [
        ({"method": "kl"}, ok, UsageError, "unknown calibration method 'kl'"),
        ({"method": "percentile", "percentile": 0}, ok, UsageError, r"percentile must be in \(0, 100\]"),
        ({"method": "entropy", "num_bins": 100}, ok, UsageError, "num_bins must be at least 256"),
        ({"bits": 16}, ok, UsageError, "bits must be between 2 and 8"),
        ({}, [], UsageError, "calibration data is empty"),
        ({}, [{"x": np.zeros((1, 5), np.float32)}], UsageError, "calibration batch 0: onnxruntime failed: .*x"),
        ({}, [{"y": np.zeros((1, 4), np.float32)}], UsageError, "calibration batch 0 has no data for input"),
    ]
    for kwargs, feeds, exc, pattern in cases:
        with pytest.raises(exc, match=pattern) as e:
            collect_ranges(model, ["h"], ListReader(feeds), **kwargs)
        one_line(e)
    broken = mlp()
    broken.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError, match="onnxruntime cannot load the model") as e:
        collect_ranges(broken, ["h"], ListReader(ok))
    one_line(e)


def test_exposed_model_keeps_the_original_and_types() -> None:
    model = mlp()
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["N", 3]))
    before = model.SerializeToString()
    exposed = exposed_model(model, ["h", "r"])
    assert model.SerializeToString() == before
    assert [o.name for o in exposed.graph.output] == ["h", "r"]
    assert exposed.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not exposed.graph.output[1].HasField("type")


def test_external_data_needs_the_model_folder(tmp_path: Path) -> None:
    model = mlp()
    onnx.save(mlp(), tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    loaded = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    feeds = [{"x": np.ones((2, 4), np.float32)}]
    ranges = collect_ranges(loaded, ["h", "W"], ListReader(feeds), model_dir=tmp_path)
    ref = collect_ranges(model, ["h", "W"], ListReader(feeds))
    assert {k: (v.min, v.max) for k, v in ranges.items()} == {k: (v.min, v.max) for k, v in ref.items()}
    with pytest.raises(ModelError, match=r"cannot read initializer 'W'.*\(pass model_dir") as e:
        collect_ranges(loaded, ["W"], ListReader(feeds))
    one_line(e)
    with pytest.raises(ModelError, match="onnxruntime cannot load the model") as e:
        collect_ranges(loaded, ["h"], ListReader(feeds))
    one_line(e)


def test_synthetic_source_end_to_end() -> None:
    model = mlp()
    src = synthetic_data(model, n=4, seed=1, default_dim=8)
    for m in METHODS:
        r = collect_ranges(model, ["h", "y"], src, m)
        assert r["h"].count == 4 * 8 * 3 and r["h"].min < 0 < r["h"].max
    assert [s.name for s in model_inputs(model)] == ["x"]


def test_input_with_an_initializer_default() -> None:
    model = mlp()
    model.graph.input.append(onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [3]))
    fed = [{"x": np.ones((1, 4), np.float32), "c": np.array([5.0, 6.0, 7.0], np.float32)}]
    unfed = [{"x": np.ones((1, 4), np.float32)}]
    assert (collect_ranges(model, ["c"], ListReader(fed))["c"].max) == 7.0
    r = collect_ranges(model, ["c", "y"], ListReader(unfed))
    assert (r["c"].min, r["c"].max) == (-1.0, 2.0)  # the default from the initializer


def test_nonfinite_values_are_skipped() -> None:
    feeds = [{"x": np.array([[1.0, np.nan, -2.0, np.inf]], np.float32)}, {"x": np.full((1, 4), np.nan, np.float32)}]
    for m in METHODS:
        r = collect_ranges(identity(shape=[1, 4]), ["t"], ListReader(feeds), m)["t"]
        assert (r.observed_min, r.observed_max, r.count, r.nonfinite) == (-2.0, 1.0, 2, 6), m
