"""Numerical equivalence of two models under onnxruntime.

onnxruntime runs on the CPU provider with graph optimizations **off** (its own fusions would hide
our differences); feeds are seeded random arrays of the declared shapes; outputs are compared by
name. Used by ``compile --verify``, by every pass test and by the conformance suite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxforge.errors import VerificationError
from onnxforge.ir.tensor_data import is_external, iter_tensors

#: Tolerances: exact rewrites and float-reordering rewrites (e.g. BatchNorm folding).
EXACT = (1e-6, 1e-6)
REORDER = (1e-4, 1e-5)


def _dims(t: onnx.TypeProto, overrides: Mapping[str, int], default_dim: int) -> list[int]:
    dims = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:  # some exporters write -1 for "any"
            dims.append(d.dim_value)
        elif d.HasField("dim_param") and d.dim_param in overrides:
            dims.append(overrides[d.dim_param])
        else:
            dims.append(default_dim)
    return dims


def random_feeds(
    model: onnx.ModelProto,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, list[int]] | None = None,
    default_dim: int = 1,
) -> dict[str, np.ndarray]:
    """Seeded random inputs for every graph input that has no initializer default.

    ``dims`` fixes symbolic dimensions by name, ``shapes`` whole input shapes.
    """
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):
            raise VerificationError(f"cannot make a random feed for non-tensor input {vi.name!r}")
        shape = list((shapes or {}).get(vi.name) or _dims(vi.type, dims or {}, default_dim))
        elem = vi.type.tensor_type.elem_type
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        if elem == onnx.TensorProto.BOOL:
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif elem == onnx.TensorProto.STRING:
            arr = np.array(rng.choice(["a", "bc", "def"], size=shape), dtype=object)
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(0, 3, size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(size=shape).astype(dtype)
        feeds[vi.name] = arr
    return feeds


def cpu_session(model: bytes | str, options: Any) -> Any:
    """An onnxruntime CPU session for a serialized model or a path; refuses (ModelError) a
    ``--target cpu-native`` model lowered for another CPU's NCHWc block, which would run and
    give wrong outputs."""
    import onnxruntime as ort

    from onnxforge.runtime.choices import check_nchwc_block

    sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    check_nchwc_block(sess.get_modelmeta().custom_metadata_map)
    return sess


@dataclass
class OrtRunner:
    """Runs a model on onnxruntime's CPU provider with optimizations off."""

    optimize: bool = False
    threads: int = 1

    def options(self) -> Any:
        """The onnxruntime SessionOptions this runner's sessions use."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # Fatal only: a failing run raises, and onnxforge reports that in one line; at level 3
        # onnxruntime also printed the same error as a log line of its own on stderr.
        so.log_severity_level = 4
        return so

    def session(self, model: onnx.ModelProto | str | os.PathLike[str]) -> Any:
        data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        return cpu_session(data, self.options())

    def run(self, model: onnx.ModelProto | str | os.PathLike[str], feeds: Mapping[str, Any]) -> dict[str, Any]:
        sess = self.session(model)
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, dict(feeds))
        return dict(zip(names, outs))


def _materialize(model: onnx.ModelProto, base_dir: Path | None, tmp: Path) -> onnx.ModelProto | Path:
    """ORT needs a file on disk for external data; copy references into a temp folder."""
    if not any(is_external(t) for t in iter_tensors(model)):
        return model
    if base_dir is None:
        raise VerificationError("model refers to external data but its folder is unknown")
    path = tmp / "model.onnx"
    for t in iter_tensors(model):
        if is_external(t):
            for e in t.external_data:
                if e.key == "location":
                    src = base_dir / e.value
                    dst = tmp / e.value
                    if not dst.exists():
                        # onnxruntime refuses symlinks that leave the model folder: hard-link,
                        # or copy across file systems.
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            os.link(src.resolve(), dst)
                        except OSError:
                            shutil.copyfile(src, dst)
    path.write_bytes(model.SerializeToString())
    return path


def compare_outputs(
    expected: Mapping[str, Any], actual: Mapping[str, Any], *, rtol: float, atol: float
) -> list[str]:
    """Differences between two output dicts, one line each (empty when equivalent)."""
    problems = []
    if set(expected) != set(actual):
        problems.append(f"output names differ: {sorted(expected)} vs {sorted(actual)}")
    for name in expected:
        if name in actual:
            problems.extend(_compare(name, expected[name], actual[name], rtol, atol))
    return problems


def _compare(name: str, a: Any, b: Any, rtol: float, atol: float) -> list[str]:
    if isinstance(a, list) or isinstance(b, list):
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            return [f"{name}: sequence lengths differ"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(_compare(f"{name}[{i}]", x, y, rtol, atol))
        return out
    if a is None or b is None:
        return [] if a is None and b is None else [f"{name}: one output is None"]
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return [f"{name}: shape {a.shape} vs {b.shape}"]
    if a.dtype != b.dtype:
        return [f"{name}: dtype {a.dtype} vs {b.dtype}"]
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        if a.dtype.kind in "fc":
            pass
        elif not np.array_equal(a, b):
            return [f"{name}: values differ"]
        else:
            return []
    if np.issubdtype(a.dtype, np.integer):
        if not np.array_equal(a, b):
            idx = np.argwhere(a != b)[0]
            return [f"{name}: integer values differ at {tuple(idx)}: {a[tuple(idx)]} vs {b[tuple(idx)]}"]
        return []
    # Half-precision kernels in onnxruntime round differently depending on layout and broadcast
    # path, so a tolerance tighter than one unit in the last place of the dtype is meaningless.
    try:
        eps = float(np.finfo(a.dtype).eps)
    except (TypeError, ValueError):
        eps = 0.0
    rtol = max(rtol, eps if a.dtype.itemsize <= 2 else 0.0)
    af, bf = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(af), np.isnan(bf)
    if not np.array_equal(nan_a, nan_b):
        return [f"{name}: NaN positions differ"]
    ok = np.isclose(af, bf, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        diff = np.abs(af - bf)
        diff[nan_a] = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(af) > 0, diff / np.abs(af), np.inf)
        at: tuple[int, ...] = (
            tuple(int(k) for k in np.unravel_index(int(np.argmax(np.where(ok, 0, diff))), a.shape)) if a.ndim else ()
        )
        return [
            f"{name}: {int((~ok).sum())} of {a.size} elements differ; max abs err {float(np.nanmax(diff)):.3g}, "
            f"max rel err {float(np.nanmax(np.where(ok, 0, rel))):.3g} (at {at}: {af[at]!r} vs {bf[at]!r})"
        ]
    return []


def assert_equivalent(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    *,
    feeds: Mapping[str, Any] | None = None,
    rtol: float = EXACT[0],
    atol: float = EXACT[1],
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    before_dir: str | os.PathLike[str] | None = None,
    after_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run both models on the same feeds and raise :class:`VerificationError` with details when an
    output (matched by name) differs beyond ``rtol``/``atol``. Returns the reference outputs."""
    if feeds is None:
        feeds = random_feeds(before, seed=seed, dims=dims)
    runner = OrtRunner()
    with tempfile.TemporaryDirectory(prefix="onnxforge-verify-") as tmp:
        tb, ta = Path(tmp) / "before", Path(tmp) / "after"
        tb.mkdir()
        ta.mkdir()
        ref = runner.run(_materialize(before, Path(before_dir) if before_dir else None, tb), feeds)
        got = runner.run(_materialize(after, Path(after_dir) if after_dir else None, ta), feeds)
    problems = compare_outputs(ref, got, rtol=rtol, atol=atol)
    if problems:
        raise VerificationError("outputs differ: " + "; ".join(problems[:5]))
    return ref


@dataclass
class LossyFigures:
    """Per-output error of a lossy result: cosine similarity (worst feed) and SQNR in dB
    (feeds pooled) of every float output, on ``feeds`` feeds."""

    cosine: dict[str, float]
    sqnr: dict[str, float]
    feeds: int


def check_lossy(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    *,
    min_cosine: float | None,
    min_sqnr: float | None,
    samples: int = 4,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    before_dir: str | os.PathLike[str] | None = None,
    after_dir: str | os.PathLike[str] | None = None,
) -> LossyFigures:
    """Run both models on ``samples`` seeded random feeds (seeds ``seed``, ``seed + 1``, ...)
    and raise :class:`VerificationError` when a float output's cosine similarity (worst feed)
    is below ``min_cosine`` or its SQNR (feeds pooled) below ``min_sqnr`` dB, when an output is
    NaN or Inf where the original's is finite, or when a non-float output differs at all."""
    from onnxforge.calibration.sqnr import ErrorPairs, below

    runner = OrtRunner()
    pairs = ErrorPairs()
    problems: list[str] = []
    names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="onnxforge-verify-") as tmp:
        tb, ta = Path(tmp) / "before", Path(tmp) / "after"
        tb.mkdir()
        ta.mkdir()
        b_model = _materialize(before, Path(before_dir) if before_dir else None, tb)
        a_model = _materialize(after, Path(after_dir) if after_dir else None, ta)
        b_sess, a_sess = runner.session(b_model), runner.session(a_model)
        names = [o.name for o in b_sess.get_outputs()]
        if sorted(names) != sorted(o.name for o in a_sess.get_outputs()):
            raise VerificationError(
                f"output names differ: {sorted(names)} vs {sorted(o.name for o in a_sess.get_outputs())}"
            )
        for k in range(samples):
            feeds = random_feeds(before, seed=seed + k, dims=dims)
            ref = dict(zip(names, b_sess.run(names, feeds)))
            got = dict(zip(names, a_sess.run(names, feeds)))
            for name in names:
                a, b = ref[name], got[name]
                if _is_float_array(a) and _is_float_array(b) and np.shape(a) == np.shape(b):
                    if np.asarray(a).dtype != np.asarray(b).dtype:
                        problems.append(f"{name}: dtype {np.asarray(a).dtype} vs {np.asarray(b).dtype}")
                    elif np.size(a):
                        pairs.add(name, np.asarray(a), np.asarray(b), feeds)
                else:
                    problems.extend(_compare(name, a, b, 0.0, 0.0))
    figures = LossyFigures(
        {n: pairs.worst_cosine(n) for n in names if n in pairs}, {n: pairs.sqnr(n) for n in names if n in pairs}, samples
    )
    for name, c in figures.cosine.items():
        if min_cosine is not None and below(c, min_cosine):
            problems.append(f"{name}: cosine {c:.5f} < {min_cosine:g}" + (" (NaN/Inf outputs)" if c != c else ""))
    for name, s in figures.sqnr.items():
        if min_sqnr is not None and below(s, min_sqnr):
            problems.append(f"{name}: SQNR {s:.1f} dB < {min_sqnr:g} dB" + (" (NaN/Inf outputs)" if s != s else ""))
    if problems:
        raise VerificationError(
            f"outputs beyond the lossy budget on {samples} seeded random feeds: " + "; ".join(dict.fromkeys(problems[:5]))
        )
    return figures


def _is_float_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"
