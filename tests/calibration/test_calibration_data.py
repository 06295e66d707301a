"""Calibration data sources: .npz, folders, readers, synthetic data, and their refusals."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from calib_models import CountingReader, ListReader, identity, mlp, one_line, two_inputs

from onnxforge.calibration.data import (
    NO_DATA_MESSAGE,
    InputSpec,
    from_folder,
    from_npz,
    from_reader,
    model_inputs,
    open_calibration,
    synthetic,
    synthetic_data,
)
from onnxforge.errors import UsageError
from onnxforge.ir import from_proto

# -- model inputs ---------------------------------------------------------------------------------


def test_model_inputs_from_proto_and_ir() -> None:
    specs = model_inputs(two_inputs())
    assert [(s.name, s.dtype, s.shape) for s in specs] == [
        ("x", np.dtype(np.float32), ("N", 3, 4)),
        ("ids", np.dtype(np.int64), ("N",)),
    ]
    assert model_inputs(from_proto(two_inputs())) == specs


# -- .npz -----------------------------------------------------------------------------------------


def _npz(tmp_path: Path, name: str = "calib.npz", compressed: bool = False, **arrays: object) -> Path:
    path = tmp_path / name
    if compressed:
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    else:
        np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_batches_are_slices_along_axis0(tmp_path: Path, compressed: bool) -> None:
    x = np.arange(7 * 3 * 4, dtype=np.float32).reshape(7, 3, 4)
    ids = np.arange(7, dtype=np.int64)
    path = _npz(tmp_path, compressed=compressed, x=x, ids=ids, label=np.zeros(7))
    src = from_npz(path, batch_size=3, inputs=model_inputs(two_inputs()))
    assert src.streamed and len(src) == 3 and src.num_batches == 3
    batches = list(src)
    assert [b["x"].shape for b in batches] == [(3, 3, 4), (3, 3, 4), (1, 3, 4)]
    assert all(set(b) == {"x", "ids"} for b in batches)  # 'label' is not a model input
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b["ids"] for b in batches]), ids)
    assert [b["x"].shape for b in src] == [(3, 3, 4), (3, 3, 4), (1, 3, 4)]  # can be read again


def test_npz_unbatched_samples_are_indexed(tmp_path: Path) -> None:
    # The model input has no batch axis: a rank-3 array holds 5 samples of shape [3, 4].
    model = identity(shape=[3, 4])
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    src = from_npz(_npz(tmp_path, x=x), inputs=model_inputs(model))
    got = list(src)
    assert len(got) == 5 and got[2]["x"].shape == (3, 4)
    np.testing.assert_array_equal(got[2]["x"], x[2])
    with pytest.raises(UsageError, match="batch size must be 1") as e:
        from_npz(_npz(tmp_path, x=x), batch_size=2, inputs=model_inputs(model))
    one_line(e)


def test_npz_fortran_order_falls_back_to_loading(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(6, 4))
    src = from_npz(_npz(tmp_path, x=x), batch_size=4, inputs=model_inputs(mlp()))
    assert not src.streamed
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in src]), x)


def test_npz_big_endian_is_converted(tmp_path: Path) -> None:
    x = np.arange(8, dtype=">f4").reshape(2, 4)
    with pytest.raises(UsageError, match="dtype >f4"):  # the model wants native float32
        from_npz(_npz(tmp_path, x=x), inputs=model_inputs(mlp()))
    src = from_npz(_npz(tmp_path, x=x))  # without specs: read and made native
    b = next(iter(src))["x"]
    assert b.dtype == np.float32 and b.dtype.isnative
    np.testing.assert_array_equal(b, x[:1])


def test_npz_streams_one_batch_at_a_time(tmp_path: Path) -> None:
    """Reading a 16 MB .npz batch by batch never holds more than a few batches."""
    x = np.ones((256, 16384), dtype=np.float32)  # 16 MiB, 64 KiB per sample
    path = _npz(tmp_path, compressed=True, x=x)
    del x
    src = from_npz(path, batch_size=4, inputs=model_inputs(mlp(features=16384)))
    tracemalloc.start()
    try:
        n = sum(float(b["x"].sum()) for b in src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 256 * 16384
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_npz_errors_are_one_line(tmp_path: Path) -> None:
    specs = model_inputs(two_inputs())
    cases = [
        (tmp_path / "nope.npz", {}, "calibration data not found: .*nope.npz"),
        (_npz(tmp_path, "a.npz", x=np.zeros((2, 3, 4), np.float32)), {}, r"no array for model input\(s\) 'ids' \(it has 'x'\)"),
        (
            _npz(tmp_path, "b.npz", x=np.zeros((4, 3, 4), np.float32), ids=np.zeros(3, np.int64)),
            {},
            r"different numbers of samples along axis 0 \('x' 4, 'ids' 3\)",
        ),
        (
            _npz(tmp_path, "c.npz", x=np.zeros((2, 3, 4)), ids=np.zeros(2, np.int64)),
            {},
            r"input 'x' has dtype float64 but the model expects float32 \(cast it",
        ),
        (
            _npz(tmp_path, "d.npz", x=np.zeros((2, 3, 5), np.float32), ids=np.zeros(2, np.int64)),
            {},
            r"input 'x' has shape \[1, 3, 5\] but the model expects \[N, 3, 4\]",
        ),
        (
            _npz(tmp_path, "e.npz", x=np.zeros((2, 2, 3, 4, 1), np.float32), ids=np.zeros(2, np.int64)),
            {},
            r"input 'x' has rank 5 .* expects rank 3",
        ),
        (
            _npz(tmp_path, "f.npz", x=np.zeros((0, 3, 4), np.float32), ids=np.zeros(0, np.int64)),
            {},
            "holds no samples",
        ),
        (_npz(tmp_path, "g.npz", x=np.zeros((2, 3, 4), np.float32), ids=np.zeros(2, np.int64)), {"batch_size": 0}, "at least 1"),
        (_npz(tmp_path, "h.npz", x=np.float32(1.0), ids=np.int64(1)), {}, "is a scalar"),
    ]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    cases.append((bad, {}, "is not a readable .npz file"))
    for path, kwargs, pattern in cases:
        with pytest.raises(UsageError, match=pattern) as e:
            from_npz(path, inputs=specs, **kwargs)
        one_line(e)


def test_npz_fixed_batch_dim_must_match(tmp_path: Path) -> None:
    model = mlp(batch=1)
    path = _npz(tmp_path, x=np.zeros((5, 4), np.float32))
    assert len(from_npz(path, batch_size=1, inputs=model_inputs(model))) == 5
    with pytest.raises(UsageError, match=r"shape \[2, 4\] but the model expects \[1, 4\]") as e:
        from_npz(path, batch_size=2, inputs=model_inputs(model))
    one_line(e)


# -- folder ---------------------------------------------------------------------------------------


def test_folder_one_feed_per_file_sorted(tmp_path: Path) -> None:
    for i, n in enumerate([3, 1, 2]):  # shapes vary from file to file
        np.savez(tmp_path / f"s{i:02d}.npz", x=np.full((n, 4), i, np.float32), extra=np.zeros(1))
    (tmp_path / "notes.txt").write_text("ignored")
    src = from_folder(tmp_path, inputs=model_inputs(mlp()))
    feeds = list(src)
    assert len(src) == 3 and [f["x"].shape[0] for f in feeds] == [3, 1, 2]
    assert [float(f["x"][0, 0]) for f in feeds] == [0.0, 1.0, 2.0]
    assert all(set(f) == {"x"} for f in feeds)


def test_folder_errors(tmp_path: Path) -> None:
    specs = model_inputs(mlp())
    with pytest.raises(UsageError, match="calibration data not found") as e:
        from_folder(tmp_path / "missing", inputs=specs)
    one_line(e)
    with pytest.raises(UsageError, match="has no .npz files") as e:
        from_folder(tmp_path, inputs=specs)
    one_line(e)
    np.savez(tmp_path / "a.npz", x=np.zeros((1, 4), np.float32))
    np.savez(tmp_path / "b.npz", y=np.zeros((1, 4), np.float32))
    src = from_folder(tmp_path, inputs=specs)  # the first file is fine
    with pytest.raises(UsageError, match=r"b.npz has no data for model input\(s\) 'x' \(it has 'y'\)") as e:
        list(src)
    one_line(e)


# -- reader ---------------------------------------------------------------------------------------


def test_reader_source_reads_until_none_and_rewinds() -> None:
    reader = CountingReader(4)
    src = from_reader(reader, inputs=model_inputs(mlp()))
    first = [f["x"] for f in src]
    assert len(first) == 4 and reader.calls == 5
    with pytest.raises(TypeError):
        len(src)  # a reader without __len__ has no known length
    second = [f["x"] for f in src]
    assert reader.rewinds == 1
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_reader_empty_dict_ends_and_no_rewind_reads_once() -> None:
    feeds = [{"x": np.zeros((1, 4), np.float32)}, {}, {"x": np.ones((1, 4), np.float32)}]
    src = from_reader(ListReader(feeds))
    assert len(list(src)) == 1
    with pytest.raises(UsageError, match=r"ListReader has no rewind\(\), so it can be read only once") as e:
        list(src)
    one_line(e)


def test_reader_with_len_and_validation() -> None:
    class Sized(ListReader):
        def __len__(self) -> int:
            return 2

    src = from_reader(Sized([{"x": np.zeros((1, 4), np.float32)}, {"x": np.zeros((1, 4))}]), inputs=model_inputs(mlp()))
    assert len(src) == 2
    it = iter(src)
    next(it)
    with pytest.raises(UsageError, match="batch 1 of the data reader: input 'x' has dtype float64") as e:
        next(it)
    one_line(e)
    with pytest.raises(UsageError, match="expected a path or an object with get_next") as e:
        from_reader(object())
    one_line(e)


# -- synthetic and dispatch -----------------------------------------------------------------------


def test_synthetic_is_seeded_and_uses_declared_shapes() -> None:
    model = two_inputs()
    a = list(synthetic_data(model, n=3, seed=7, default_dim=2))
    b = list(synthetic_data(model, n=3, seed=7, default_dim=2))
    c = list(synthetic_data(model, n=3, seed=8, default_dim=2))
    assert len(a) == 3 and a[0]["x"].shape == (2, 3, 4) and a[0]["ids"].shape == (2,)
    assert a[0]["x"].dtype == np.float32 and a[0]["ids"].dtype == np.int64
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa["x"], fb["x"])
    assert not np.array_equal(a[0]["x"], c[0]["x"])
    assert not np.array_equal(a[0]["x"], a[1]["x"])  # samples differ from each other
    src = synthetic(model_inputs(model), 2, dims={"N": 5})
    assert src.synthetic and next(iter(src))["x"].shape == (5, 3, 4)
    assert "synthetic" in src.description and "do not reflect real inputs" in src.description
    src = synthetic(model_inputs(model), 1, shapes={"x": [1, 3, 4]})
    assert next(iter(src))["x"].shape == (1, 3, 4)
    with pytest.raises(UsageError, match="rank 2") as e:
        synthetic(model_inputs(model), 1, shapes={"x": [3, 4]})
    one_line(e)


def test_no_data_is_refused_unless_synthetic_is_asked_for() -> None:
    specs = model_inputs(mlp())
    with pytest.raises(UsageError) as e:
        open_calibration(None, inputs=specs)
    assert one_line(e) == NO_DATA_MESSAGE
    assert "npz" in NO_DATA_MESSAGE and "synthetic" in NO_DATA_MESSAGE
    src = open_calibration(None, inputs=specs, allow_synthetic=True, synthetic_samples=3)
    assert src.synthetic and len(src) == 3


def test_open_calibration_dispatches(tmp_path: Path) -> None:
    specs = model_inputs(mlp())
    path = _npz(tmp_path, x=np.zeros((4, 4), np.float32))
    assert len(open_calibration(path, inputs=specs, batch_size=2)) == 2
    assert len(open_calibration(str(tmp_path), inputs=specs)) == 1  # the folder holds calib.npz
    reader_src = open_calibration(CountingReader(2), input_names=["x"])
    assert len(list(reader_src)) == 2
    assert open_calibration(reader_src) is reader_src
    (tmp_path / "data.csv").write_text("1,2,3")
    for spec, pattern in [
        (tmp_path / "data.csv", "neither a .npz file nor a folder"),
        (tmp_path / "missing.npz", "calibration data not found"),
        (42, "cannot read calibration data from a int"),
    ]:
        with pytest.raises(UsageError, match=pattern) as e:
            open_calibration(spec, inputs=specs)  # type: ignore[arg-type]
        one_line(e)
    with pytest.raises(UsageError, match=r"no array for model input\(s\) 'x'") as e:
        open_calibration(_npz(tmp_path, "other.npz", y=np.zeros(3)), input_names=["x"])
    one_line(e)


def test_input_names_only_check_presence(tmp_path: Path) -> None:
    src = open_calibration(CountingReader(1, name="z"), input_names=["x"])
    with pytest.raises(UsageError, match=r"batch 0 of the data reader has no data for model input\(s\) 'x'") as e:
        list(src)
    one_line(e)
    # input_names plus specs: the named inputs are checked fully
    src = open_calibration(ListReader([{"x": np.zeros((1, 5), np.float32)}]), input_names=["x"], inputs=model_inputs(mlp()))
    with pytest.raises(UsageError, match=r"shape \[1, 5\] but the model expects \[N, 4\]"):
        list(src)
    assert InputSpec("x", None, None).rank is None


def test_a_list_of_feeds_is_a_source_read_as_often_as_needed() -> None:
    from onnxforge.calibration.data import model_inputs, open_calibration

    model = mlp()
    feeds = [{"x": np.full((2, 4), float(i), np.float32)} for i in range(3)]
    source = open_calibration(feeds, inputs=model_inputs(model))
    assert source.num_batches == 3
    first = [f["x"][0, 0] for f in source]
    assert first == [f["x"][0, 0] for f in source] == [0.0, 1.0, 2.0]  # a second pass rewinds
    with pytest.raises(UsageError) as e:
        list(open_calibration([{"x": np.zeros((2, 5), np.float32)}], inputs=model_inputs(model)))
    one_line(e)
