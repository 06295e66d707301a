"""Numerical equivalence of two models under onnxruntime.

onnxruntime runs on the CPU provider with graph optimizations **off** (its own fusions would hide
our differences); feeds are seeded random arrays of the declared shapes; outputs are compared by
name. Used by ``compile --verify``, by every pass test and by the conformance suite.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge import modelio
from onnxforge.errors import ModelError, VerificationError
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.tensor_data import TensorStore, is_external, iter_tensors
from onnxforge.metrics.sqnr import ErrorPairs, below
from onnxforge.runtime.options import session_options
from onnxforge.runtime.session import create_session

log = logging.getLogger(__name__)

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

    ``dims`` fixes symbolic dimensions by name, ``shapes`` whole input shapes. Integer inputs
    get values 0..2 (valid token ids, indices and flags for most models), except attention-style
    masks (an integer input whose name contains ``mask``): those are 1 on a random-length prefix
    of the last axis and 0 after it, the only values a mask takes (fused Attention reads any
    nonzero as "keep", a decomposed mask would scale by the value).
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
        elif np.issubdtype(dtype, np.integer) and "mask" in vi.name.lower() and shape:
            keep = rng.integers(1, max(shape[-1], 1) + 1, size=shape[:-1] + [1])
            arr = (np.arange(shape[-1]) < keep).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(0, 3, size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(size=shape).astype(dtype)
        feeds[vi.name] = arr
    return feeds


@dataclass
class OrtRunner:
    """Runs a model on onnxruntime's CPU provider with optimizations off."""

    optimize: bool = False
    threads: int = 1

    def options(self) -> Any:
        """The onnxruntime SessionOptions this runner's sessions use. Log level 4 (fatal only):
        a failing run raises and onnxforge reports it in one line; at level 3 onnxruntime also
        printed the same error as a log line of its own on stderr."""
        return session_options(optimization="all" if self.optimize else "disable", threads=self.threads, log_level=4)

    def session(self, model: onnx.ModelProto | str | os.PathLike[str]) -> Any:
        """A CPU session (the runtime's factory: the cpu-native guard applies)."""
        return create_session(model, options=self.options())

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


#: A Loop that runs more iterations than this, with no condition that can stop it earlier, is
#: not run by verification: onnxruntime would run for hours or abort the process when memory
#: runs out (a fuzzed trip count of 2**63 - 1 did).
MAX_LOOP_TRIPS = 10_000_000


def refuse_unbounded_loops(model: onnx.ModelProto) -> None:
    """Raise :class:`VerificationError` when a Loop of ``model`` (any graph) has a constant trip
    count above :data:`MAX_LOOP_TRIPS` and no loop condition input (only the trip count stops it)."""
    for g in graph_protos(model.graph):
        consts = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.output and n.attribute and n.attribute[0].name == "value":
                consts[n.output[0]] = n.attribute[0].t
        for n in g.node:
            if n.op_type != "Loop" or not n.input or not n.input[0] or n.input[0] not in consts:
                continue
            if len(n.input) > 1 and n.input[1]:
                continue  # a condition can end it earlier
            try:
                trips = int(numpy_helper.to_array(consts[n.input[0]]).reshape(-1)[0])
            except Exception:
                continue
            if trips > MAX_LOOP_TRIPS:
                raise VerificationError(
                    f"cannot verify: Loop {n.name or '(unnamed)'!r} runs {trips} iterations (more than "
                    f"{MAX_LOOP_TRIPS}); onnxruntime would not finish it"
                )


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
    refuse_unbounded_loops(before)
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
    refuse_unbounded_loops(before)
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


#: Compiled models up to this size (tensor bytes) are test-loaded in onnxruntime before writing.
RUNTIME_CHECK_LIMIT = 512 * 2**20
#: Operator domains onnxruntime's CPU build implements; models using others are not test-loaded.
ORT_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc", "ai.onnx.preview.training"}
)


def check_runtime_loadable(
    proto: onnx.ModelProto, source: str | os.PathLike[str] | None = None, store: TensorStore | None = None
) -> None:
    """Refuse (:class:`ModelError`) to let a compiled model out when onnxruntime (CPU, graph
    optimizations off) cannot create a session for it but can for the input ``source``. When the
    input fails too (or is not a file), log a warning and let it pass: onnxforge does not make
    such a model worse. A kernel the CPU provider lacks (NOT_IMPLEMENTED: a CUDA-only contrib op
    of ``--target cuda``) is not a verdict either. Skipped, to stay cheap, for models over
    :data:`RUNTIME_CHECK_LIMIT` and for models using operator domains onnxruntime does not
    implement (custom ops)."""
    size = modelio.total_tensor_bytes(proto)
    local = {f.domain for f in proto.functions}
    foreign = sorted({imp.domain for imp in proto.opset_import} - ORT_DOMAINS - local)
    if size > RUNTIME_CHECK_LIMIT or foreign:
        why = f"{size / 2**20:.0f} MiB of tensors" if not foreign else f"domains {', '.join(foreign)}"
        log.debug("onnxruntime load check skipped (%s)", why)
        return
    runner = OrtRunner()
    with tempfile.TemporaryDirectory(prefix="onnxforge-check-") as tmp:
        try:
            runner.session(_materialize(proto, store.base_dir if store is not None else None, Path(tmp)))
            return
        except Exception as e:
            problem = _short(e, 300)
            if type(e).__name__ == "NotImplemented" or "NOT_IMPLEMENTED" in problem:
                # A kernel the CPU provider lacks (e.g. a CUDA-only contrib op of --target cuda)
                # says nothing about whether the model is valid.
                log.info("onnxruntime load check inconclusive: %s", problem)
                return
    if source is None and store is not None and store.source_files:
        source = store.source_files[0]
    if source is None:
        log.warning("onnxruntime cannot load the compiled model (%s); the input was not a file, so it is unknown "
                    "whether it could", problem)
        return
    try:
        runner.session(os.fspath(source))
    except Exception as e:
        log.warning("onnxruntime cannot load the input %s either (%s); writing the compiled model anyway",
                    source, _short(e, 200))
        return
    raise ModelError(
        f"onnxruntime cannot load the compiled model, though it loads the input: {problem}; nothing was "
        "written (a pass produced an invalid model: please report it with the input)"
    )


def _short(e: BaseException, limit: int) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
