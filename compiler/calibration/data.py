"""Calibration data: where the sample inputs for range collection come from.

A :class:`CalibrationSource` is an iterable of *feeds*: dicts mapping a model input name to a
numpy array, one batch at a time, ready for ``InferenceSession.run``. Sources:

* :func:`from_npz` -- one ``.npz`` file, arrays keyed by input name, samples along axis 0.
  An array whose rank equals the model input's rank is sliced ``batch_size`` samples at a time
  (axis 0 is the model's batch axis); an array with one more axis than the input holds unbatched
  samples and is indexed one sample at a time.
* :func:`from_folder` -- a folder of ``.npz`` files (sorted by name), each one complete feed.
  Use this when input shapes vary between samples.
* :func:`from_reader` -- an onnxruntime ``CalibrationDataReader``, or any object whose
  ``get_next()`` returns a feed dict, then ``None`` (or an empty dict) at the end; ``rewind()``
  is used, when present, to read it again.
* :func:`synthetic` / :func:`synthetic_data` -- seeded random feeds of the declared shapes. A
  last resort: ranges from random inputs say little about real activations, and the source is
  marked (``source.synthetic``) so that reports can say so.

:func:`open_calibration` turns what a user gave (a path, a reader, nothing) into a source and
refuses bad data with a one-line :class:`~onnxforge.errors.UsageError`.

Memory: every source holds at most one batch at a time.

* ``.npz``: ``np.load(mmap_mode='r')`` cannot map arrays inside a zip archive, so the reader
  opens each member as a stream, parses the ``.npy`` header, and reads exactly the bytes of one
  batch per input (compressed members are inflated incrementally by :mod:`zipfile`). Arrays that
  cannot be streamed (Fortran order, object dtype, ``.npy`` format 3.0) are loaded whole, one
  input at a time, and sliced; :attr:`NpzSource.streamed` tells which.
* A folder loads one file at a time; a reader holds what its ``get_next()`` returned;
  synthetic data generates each batch on demand (and identically on every pass).
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
import onnx
from onnx import helper

from onnxforge.errors import UsageError
from onnxforge.ir import Model

log = logging.getLogger(__name__)

#: One batch of model inputs: input name -> array.
Feed = dict[str, np.ndarray]
#: A dimension as declared by the model: a size, a symbolic name, or unknown.
Dim = int | str | None


@runtime_checkable
class DataReader(Protocol):
    """What onnxruntime's ``CalibrationDataReader`` offers (``rewind()`` is optional)."""

    def get_next(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class InputSpec:
    """A model input as declared: name, element type and shape.

    ``dtype`` is None for non-tensor inputs (sequences, optionals), ``shape`` None when the rank
    is unknown. ``optional`` marks inputs with an initializer default (they may be fed or not).
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None
    optional: bool = False

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def model_inputs(model: onnx.ModelProto | Model) -> list[InputSpec]:
    """The declared inputs of ``model`` (a ModelProto or an onnxforge IR model)."""
    if isinstance(model, Model):
        return [
            _spec(v.name, v.type if v.const is None else _type_of(v.const), v.is_initializer())
            for v in model.graph.inputs
        ]
    inits = {t.name: t for t in model.graph.initializer}
    return [_spec(vi.name, vi.type, vi.name in inits) for vi in model.graph.input]


def _type_of(t: onnx.TensorProto) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(t.data_type, list(t.dims))


def _spec(name: str, type_: onnx.TypeProto | None, optional: bool) -> InputSpec:
    if type_ is None or not type_.HasField("tensor_type"):
        return InputSpec(name, None, None, optional)
    tt = type_.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
    if not tt.HasField("shape"):
        return InputSpec(name, dtype, None, optional)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return InputSpec(name, dtype, tuple(dims), optional)


# -- validation -------------------------------------------------------------------------------


def check_array(spec: InputSpec, dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    """Raise a one-line :class:`UsageError` when an array does not fit the declared input."""
    name = spec.name
    if spec.dtype is not None and dtype != spec.dtype:
        hint = f" (cast it, e.g. arr.astype(np.{spec.dtype.name}))" if spec.dtype.kind in "fiub" else ""
        raise UsageError(
            f"{where}: input {name!r} has dtype {dtype} but the model expects {spec.dtype}{hint}"
        )
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise UsageError(
            f"{where}: input {name!r} has rank {len(shape)} (shape {_fmt_shape(shape)}) "
            f"but the model expects rank {len(spec.shape)} {_fmt_shape(spec.shape)}"
        )
    for got, want in zip(shape, spec.shape):
        if isinstance(want, int) and got != want:
            raise UsageError(
                f"{where}: input {name!r} has shape {_fmt_shape(shape)} "
                f"but the model expects {_fmt_shape(spec.shape)}"
            )


def check_feed(feed: object, specs: Mapping[str, InputSpec], where: str) -> Feed:
    """Validate one feed against the model's inputs; returns it restricted to model inputs.

    Keys that are not model inputs (labels stored beside the inputs, say) are dropped.
    """
    if not isinstance(feed, Mapping):
        raise UsageError(f"{where}: expected a dict of input name -> array, got {type(feed).__name__}")
    missing = [s.name for s in specs.values() if not s.optional and s.name not in feed]
    if missing:
        raise UsageError(f"{where} has no data for model input(s) {_names(missing)} (it has {_names(feed)})")
    out: Feed = {}
    for name, value in feed.items():
        spec = specs.get(name)
        if spec is None:
            continue
        arr = np.asarray(value)
        check_array(spec, arr.dtype, arr.shape, where)
        out[name] = arr
    return out


def _names(names: Sequence[str] | Mapping[str, object]) -> str:
    items = list(names)
    shown = ", ".join(repr(n) for n in items[:8])
    return shown + (f", ... ({len(items)} in all)" if len(items) > 8 else "") if items else "nothing"


def _fmt_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _spec_map(inputs: Sequence[InputSpec] | None) -> dict[str, InputSpec]:
    return {s.name: s for s in inputs or ()}


# -- the source interface ---------------------------------------------------------------------


class CalibrationSource(ABC):
    """An iterable of feeds, one batch at a time.

    ``num_batches`` is the number of feeds when known (``len(source)`` then works, otherwise it
    raises TypeError, and ``operator.length_hint`` returns its default). Iterating again starts
    over where the source allows it (a reader without ``rewind()`` can be read only once).
    """

    #: True for random data: ranges computed from it do not reflect real inputs.
    synthetic: bool = False

    @abstractmethod
    def __iter__(self) -> Iterator[Feed]: ...

    @property
    def num_batches(self) -> int | None:
        return None

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for reports: what the data is and how much of it."""

    def __len__(self) -> int:
        n = self.num_batches
        if n is None:
            raise TypeError(f"{type(self).__name__} does not know its length")
        return n

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


# -- .npz file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """One array of an .npz file as its header describes it."""

    key: str
    member: str
    dtype: np.dtype
    shape: tuple[int, ...]
    streamable: bool
    unbatched: bool  # one more axis than the model input: samples are indexed, not sliced

    @property
    def samples(self) -> int:
        return self.shape[0]

    def sample_shape(self, count: int) -> tuple[int, ...]:
        return self.shape[1:] if self.unbatched else (count, *self.shape[1:])


class NpzSource(CalibrationSource):
    """Batches sliced along axis 0 of the arrays in one ``.npz`` file (see the module notes)."""

    def __init__(self, path: Path, members: list[_Member], batch_size: int) -> None:
        self.path = path
        self.members = members
        self.batch_size = batch_size
        self.samples = members[0].samples

    @property
    def streamed(self) -> bool:
        """True when every array is read batch by batch rather than loaded whole."""
        return all(m.streamable for m in self.members)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    @property
    def description(self) -> str:
        return f"{self.path} ({self.samples} samples, batch size {self.batch_size})"

    def __iter__(self) -> Iterator[Feed]:
        with zipfile.ZipFile(self.path) as zf:
            readers = [_member_reader(zf, m, self.path) for m in self.members]
            try:
                for start in range(0, self.samples, self.batch_size):
                    count = min(self.batch_size, self.samples - start)
                    yield {m.key: r(count) for m, r in zip(self.members, readers)}
            finally:
                for r in readers:
                    r.close()


class _StreamReader:
    """Reads consecutive samples of one .npy member straight from the (inflating) zip stream."""

    def __init__(self, stream: IO[bytes], member: _Member, path: Path) -> None:
        self.stream = stream
        self.member = member
        self.path = path
        self.sample_bytes = int(np.prod(member.shape[1:], dtype=np.int64)) * member.dtype.itemsize

    def __call__(self, count: int) -> np.ndarray:
        m = self.member
        data = self.stream.read(self.sample_bytes * count)
        if len(data) != self.sample_bytes * count:
            raise UsageError(f"{self.path}: array {m.key!r} is truncated")
        arr = np.frombuffer(data, dtype=m.dtype).reshape(m.sample_shape(count))
        return arr if m.dtype.isnative else arr.astype(m.dtype.newbyteorder("="))

    def close(self) -> None:
        self.stream.close()


class _LoadedReader:
    """Fallback for arrays that cannot be streamed: loaded whole, then sliced."""

    def __init__(self, array: np.ndarray, member: _Member) -> None:
        self.array = array
        self.member = member
        self.pos = 0

    def __call__(self, count: int) -> np.ndarray:
        start, self.pos = self.pos, self.pos + count
        if self.member.unbatched:
            return np.ascontiguousarray(self.array[start])
        return np.ascontiguousarray(self.array[start : start + count])

    def close(self) -> None:
        self.array = np.empty(0)


def _member_reader(zf: zipfile.ZipFile, m: _Member, path: Path) -> _StreamReader | _LoadedReader:
    stream = zf.open(m.member)
    if m.streamable:
        _read_header(stream)  # position the stream at the data
        return _StreamReader(stream, m, path)
    try:
        arr = np.lib.format.read_array(stream, allow_pickle=False)
    except ValueError as e:
        raise UsageError(f"{path}: cannot read array {m.key!r}: {_one_line(e)}") from None
    finally:
        stream.close()
    return _LoadedReader(arr, m)


def _read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) from a .npy header, or None for formats we do not stream."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return None


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def from_npz(
    path: str | os.PathLike[str], batch_size: int = 1, *, inputs: Sequence[InputSpec] | None = None
) -> NpzSource:
    """Batches of ``batch_size`` samples from the arrays of one ``.npz`` file.

    With ``inputs`` (see :func:`model_inputs`), arrays are checked against the model up front:
    every required input is present, dtypes match, ranks and fixed dimensions fit, and all
    arrays hold the same number of samples. Arrays that are not model inputs are ignored.
    """
    p = Path(path)
    if batch_size < 1:
        raise UsageError(f"calibration batch size must be at least 1, got {batch_size}")
    if not p.exists():
        raise UsageError(f"calibration data not found: {p}")
    specs = _spec_map(inputs)
    headers = _npz_headers(p)
    if specs:
        missing = [s.name for s in specs.values() if not s.optional and s.name not in headers]
        if missing:
            raise UsageError(
                f"{p} has no array for model input(s) {_names(missing)} (it has {_names(headers)})"
            )
        headers = {k: v for k, v in headers.items() if k in specs}
    if not headers:
        raise UsageError(f"{p} holds no arrays")
    members = [_member(p, key, h, specs.get(key), batch_size) for key, h in headers.items()]
    _check_sample_counts(p, members)
    if members[0].samples == 0:
        raise UsageError(f"{p} holds no samples (axis 0 of its arrays has length 0)")
    return NpzSource(p, members, batch_size)


_Header = tuple[str, tuple[int, ...], bool, np.dtype, bool]


def _npz_headers(p: Path) -> dict[str, _Header]:
    """key -> (member name, shape, fortran_order, dtype, streamable), without reading data."""
    headers: dict[str, _Header] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    header = _read_header(f)
                    if header is None:  # an unusual format version: let numpy read it whole
                        f.seek(0)
                        arr = np.lib.format.read_array(f, allow_pickle=False)
                        header = (arr.shape, False, arr.dtype)
                        streamable = False
                    else:
                        streamable = not header[1] and not header[2].hasobject
                shape, fortran, dtype = header
                headers[member[:-4]] = (member, tuple(shape), fortran, np.dtype(dtype), streamable)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UsageError(f"{p} is not a readable .npz file: {_one_line(e)}") from None
    return headers


def _member(p: Path, key: str, h: _Header, spec: InputSpec | None, batch_size: int) -> _Member:
    member, shape, _, dtype, streamable = h
    if not shape:
        raise UsageError(f"{p}: array {key!r} is a scalar; samples must lie along axis 0")
    rank = spec.rank if spec is not None else None
    unbatched = rank is not None and len(shape) == rank + 1
    if unbatched and batch_size != 1:
        raise UsageError(
            f"{p}: array {key!r} holds unbatched samples (rank {len(shape)} for a rank-{rank} "
            f"input), so the batch size must be 1, not {batch_size}"
        )
    m = _Member(key, member, dtype, shape, streamable, unbatched)
    if spec is not None:
        first = min(batch_size, m.samples) if m.samples else batch_size
        check_array(spec, dtype, m.sample_shape(first), f"{p} (batch of {first})")
        rest = m.samples % batch_size
        if rest and m.samples > batch_size:
            check_array(spec, dtype, m.sample_shape(rest), f"{p} (last batch of {rest})")
    return m


def _check_sample_counts(p: Path, members: list[_Member]) -> None:
    counts = {m.key: m.samples for m in members}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k!r} {n}" for k, n in list(counts.items())[:8])
        raise UsageError(f"{p}: arrays hold different numbers of samples along axis 0 ({detail})")


# -- folder of .npz files ---------------------------------------------------------------------


class FolderSource(CalibrationSource):
    """One feed per ``.npz`` file of a folder, in sorted file-name order."""

    def __init__(self, path: Path, files: list[Path], specs: dict[str, InputSpec]) -> None:
        self.path = path
        self.files = files
        self.specs = specs

    @property
    def num_batches(self) -> int:
        return len(self.files)

    @property
    def description(self) -> str:
        return f"{self.path}/ ({len(self.files)} .npz files)"

    def __iter__(self) -> Iterator[Feed]:
        for f in self.files:
            yield self._load(f)

    def _load(self, f: Path) -> Feed:
        try:
            with np.load(f, allow_pickle=False) as z:
                missing = [s.name for s in self.specs.values() if not s.optional and s.name not in z.files]
                if missing:
                    raise UsageError(f"{f} has no data for model input(s) {_names(missing)} (it has {_names(z.files)})")
                feed = {k: z[k] for k in z.files if not self.specs or k in self.specs}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise UsageError(f"{f} is not a readable .npz file: {_one_line(e)}") from None
        return check_feed(feed, self.specs, str(f)) if self.specs else feed


def from_folder(path: str | os.PathLike[str], *, inputs: Sequence[InputSpec] | None = None) -> FolderSource:
    """One feed per ``*.npz`` file in ``path`` (sorted by name; not recursive).

    Each file holds one complete feed (arrays keyed by input name, fed as they are), so inputs
    may change shape from file to file. With ``inputs`` the first file's arrays are checked up
    front and every later file when it is read.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"calibration data not found: {p}")
    if not p.is_dir():
        raise UsageError(f"{p} is not a folder")
    files = sorted(f for f in p.glob("*.npz") if f.is_file())
    if not files:
        raise UsageError(f"calibration folder {p} has no .npz files")
    source = FolderSource(p, files, _spec_map(inputs))
    if source.specs:
        source._load(files[0])
    return source


# -- data reader ------------------------------------------------------------------------------


class ReaderSource(CalibrationSource):
    """Feeds from an onnxruntime-style ``CalibrationDataReader``."""

    def __init__(self, reader: DataReader, specs: dict[str, InputSpec]) -> None:
        self.reader = reader
        self.specs = specs
        self._passes = 0

    @property
    def num_batches(self) -> int | None:
        try:
            n = len(self.reader)  # type: ignore[arg-type]
        except (TypeError, NotImplementedError):
            return None
        return n if isinstance(n, int) and n >= 0 else None

    @property
    def description(self) -> str:
        n = self.num_batches
        return f"data reader {type(self.reader).__name__}" + (f" ({n} batches)" if n is not None else "")

    def __iter__(self) -> Iterator[Feed]:
        if self._passes:
            rewind = getattr(self.reader, "rewind", None)
            if not callable(rewind):
                raise UsageError(
                    f"the data reader {type(self.reader).__name__} has no rewind(), so it can be read only once"
                )
            rewind()
        self._passes += 1
        index = 0
        while True:
            feed = self.reader.get_next()
            if feed is None or (isinstance(feed, Mapping) and not feed):
                return
            where = f"batch {index} of the data reader"
            yield check_feed(feed, self.specs, where) if self.specs else _as_feed(feed, where)
            index += 1


def _as_feed(feed: object, where: str) -> Feed:
    if not isinstance(feed, Mapping):
        raise UsageError(f"{where}: expected a dict of input name -> array, got {type(feed).__name__}")
    return {str(k): np.asarray(v) for k, v in feed.items()}


def from_reader(reader: object, *, inputs: Sequence[InputSpec] | None = None) -> ReaderSource:
    """Wrap an onnxruntime ``CalibrationDataReader`` (anything with ``get_next()``).

    Reading stops at the first ``None`` or empty dict. With ``inputs`` every batch is checked
    as it arrives. ``rewind()`` is called before a second pass when the reader has it.
    """
    if not isinstance(reader, DataReader):
        raise UsageError(
            f"cannot read calibration data from a {type(reader).__name__}: expected a path or an object "
            "with get_next() (an onnxruntime CalibrationDataReader)"
        )
    return ReaderSource(reader, _spec_map(inputs))


class FeedReader:
    """An onnxruntime-style ``CalibrationDataReader`` over feeds held in memory (rewindable);
    also what onnxruntime's own ``quantize_static`` accepts."""

    def __init__(self, feeds: Sequence[Mapping[str, object]]) -> None:
        self.feeds = list(feeds)
        self.i = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def get_next(self) -> Mapping[str, object] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def from_feeds(feeds: Sequence[Mapping[str, object]], *, inputs: Sequence[InputSpec] | None = None) -> ReaderSource:
    """Feeds already in memory (a list of input name -> array dicts, one batch each), read as
    often as needed and checked like a data reader's."""
    return ReaderSource(FeedReader(feeds), _spec_map(inputs))


# -- synthetic data ---------------------------------------------------------------------------


class SyntheticSource(CalibrationSource):
    """Seeded random feeds of the declared shapes. A last resort: see :func:`synthetic`."""

    synthetic = True

    def __init__(self, shapes: dict[str, tuple[np.dtype, tuple[int, ...]]], n: int, seed: int) -> None:
        self.shapes = shapes
        self.n = n
        self.seed = seed

    @property
    def num_batches(self) -> int:
        return self.n

    @property
    def description(self) -> str:
        return f"synthetic random data ({self.n} batches, seed {self.seed}): ranges do not reflect real inputs"

    def __iter__(self) -> Iterator[Feed]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n):
            yield {name: _random(rng, dtype, shape) for name, (dtype, shape) in self.shapes.items()}


def _random(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 3, size=shape).astype(dtype)
    if dtype.kind in "fc":
        return rng.standard_normal(size=shape).astype(dtype)
    raise UsageError(f"cannot make synthetic data of dtype {dtype}")


def synthetic(
    inputs: Sequence[InputSpec],
    n: int = 16,
    seed: int = 0,
    *,
    default_dim: int = 1,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> SyntheticSource:
    """``n`` seeded random feeds for the required ``inputs``: a last resort.

    Floats are standard normal, integers uniform in {0, 1, 2}, booleans fair coins. Symbolic
    dimensions take their size from ``dims`` (by dimension name), whole shapes from ``shapes``
    (by input name), and anything still unknown is ``default_dim``. Real activations rarely look
    like the response to white noise; use real samples whenever there are any.
    """
    if n < 1:
        raise UsageError(f"the number of synthetic samples must be at least 1, got {n}")
    resolved: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for spec in inputs:
        if spec.optional:
            continue
        if spec.dtype is None:
            raise UsageError(f"cannot make synthetic data for input {spec.name!r}: it is not a tensor")
        given = (shapes or {}).get(spec.name)
        if given is not None:
            shape = tuple(int(d) for d in given)
            check_array(spec, spec.dtype, shape, "synthetic data")
        elif spec.shape is None:
            raise UsageError(f"cannot make synthetic data for input {spec.name!r}: its rank is unknown (give its shape)")
        else:
            shape = tuple(_resolve(d, dims or {}, default_dim) for d in spec.shape)
        resolved[spec.name] = (spec.dtype, shape)
    return SyntheticSource(resolved, n, seed)


def _resolve(d: Dim, dims: Mapping[str, int], default_dim: int) -> int:
    if isinstance(d, int):
        return d
    if isinstance(d, str) and d in dims:
        return int(dims[d])
    return default_dim


def synthetic_data(
    model: onnx.ModelProto | Model,
    n: int = 16,
    seed: int = 0,
    *,
    default_dim: int = 1,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> SyntheticSource:
    """Seeded random feeds for ``model``'s inputs (see :func:`synthetic`). A last resort only."""
    return synthetic(model_inputs(model), n, seed, default_dim=default_dim, dims=dims, shapes=shapes)


# -- dispatch ---------------------------------------------------------------------------------

NO_DATA_MESSAGE = (
    "calibration needs sample inputs: give a .npz file, a folder of .npz files or a "
    "CalibrationDataReader (random synthetic data is possible only when asked for explicitly)"
)


def open_calibration(
    spec: str | os.PathLike[str] | DataReader | CalibrationSource | Sequence[Mapping[str, object]] | None,
    *,
    input_names: Sequence[str] | None = None,
    inputs: Sequence[InputSpec] | None = None,
    allow_synthetic: bool = False,
    batch_size: int = 1,
    synthetic_samples: int = 16,
    seed: int = 0,
    default_dim: int = 1,
    dims: Mapping[str, int] | None = None,
) -> CalibrationSource:
    """Turn what the user gave into a :class:`CalibrationSource`.

    ``spec``: a ``.npz`` path, a folder of ``.npz`` files, a ``CalibrationDataReader``, a list
    of feed dicts, an existing source, or None. None is refused unless ``allow_synthetic`` is set, in which case
    ``synthetic_samples`` random feeds are generated (needs ``inputs`` for shapes and dtypes).
    ``inputs`` (from :func:`model_inputs`) enables dtype/rank/shape checks; ``input_names``
    alone only checks that the required inputs are present. Every refusal is a one-line
    :class:`UsageError`.
    """
    specs = _merge_specs(input_names, inputs)
    if spec is None:
        if not allow_synthetic:
            raise UsageError(NO_DATA_MESSAGE)
        if inputs is None:
            raise UsageError("synthetic calibration data needs the model's declared inputs (shapes and dtypes)")
        source = synthetic(inputs, synthetic_samples, seed, default_dim=default_dim, dims=dims)
        log.warning("calibrating on %s", source.description)
        return source
    if isinstance(spec, CalibrationSource):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec)
        if not p.exists():
            raise UsageError(f"calibration data not found: {p}")
        if p.is_dir():
            return from_folder(p, inputs=specs)
        if p.suffix.lower() != ".npz" and not zipfile.is_zipfile(p):
            raise UsageError(f"calibration data {p} is neither a .npz file nor a folder of .npz files")
        return from_npz(p, batch_size, inputs=specs)
    if isinstance(spec, (list, tuple)) and all(isinstance(f, Mapping) for f in spec):
        return from_feeds(spec, inputs=specs)
    return from_reader(spec, inputs=specs)


def _merge_specs(input_names: Sequence[str] | None, inputs: Sequence[InputSpec] | None) -> list[InputSpec] | None:
    """Full specs when given; bare names become specs that only require presence."""
    if inputs is not None:
        if input_names is None:
            return list(inputs)
        by_name = {s.name: s for s in inputs}
        named = [by_name.get(n, InputSpec(n, None, None)) for n in input_names]
        return named + [s for s in inputs if s.name not in set(input_names) and s.optional]
    if input_names is not None:
        return [InputSpec(n, None, None) for n in input_names]
    return None
