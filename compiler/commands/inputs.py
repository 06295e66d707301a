"""Inputs for the commands that run a model (``bench``, ``tune``, ``lower``): realistic
defaults from the model's declared types and shapes, ``--shape``/``--dim`` overrides and
``--input FILE.npz``.

Defaults (:func:`default_dims`, :func:`run_feeds`): seeded random arrays from
:func:`onnxforge.equivalence.random_feeds` (normal floats, attention masks of ones then zeros),
with two changes that make them what a deployed model sees:

* symbolic dims are 1, except sequence-like ones (a name containing ``seq``, ``length``,
  ``len`` or ``token``), which are 128: a text model timed on one token says little;
* an integer input that a ``Gather`` uses as indices into a constant table (token ids, token
  types, positions) takes values across the whole table, ``[0, rows)``, so every id is valid
  and lookups are not all to the first three rows.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxforge.equivalence import random_feeds
from onnxforge.errors import UsageError

#: Default size of a sequence-like symbolic dim.
SEQUENCE_DIM = 128
_SEQUENCE_WORDS = ("seq", "length", "len", "token")


def default_dims(proto: onnx.ModelProto) -> dict[str, int]:
    """Sizes of the symbolic dims of the graph inputs when nothing else is said."""
    out: dict[str, int] = {}
    for vi in proto.graph.input:
        if not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param:
                name = d.dim_param.lower()
                out[d.dim_param] = SEQUENCE_DIM if any(w in name for w in _SEQUENCE_WORDS) else 1
    return out


def _gather_rows(proto: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> rows of the constant table a ``Gather`` (axis 0) indexes with it."""
    tables = {t.name: (list(t.dims)[0] if t.dims else 0) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.t.dims:
                    tables[node.output[0]] = int(a.t.dims[0])
    inputs = {vi.name for vi in proto.graph.input} - set(tables)
    rows: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        data, idx = node.input[0], node.input[1]
        if axis == 0 and idx in inputs and tables.get(data, 0) > 0:
            rows[idx] = min(rows.get(idx, tables[data]), tables[data])
    return rows


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays of ``--input FILE.npz`` by name (a one-line error when unreadable)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"cannot read --input {p}: {' '.join(str(e).split())[:200]}") from None


def run_feeds(
    proto: onnx.ModelProto,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    dims: Mapping[str, int] | None = None,
    given: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs to run ``proto`` on: ``given`` arrays (e.g. from ``--input``) as they are, the rest
    seeded and realistic (module docstring) at ``shapes`` / ``dims``."""
    given = dict(given or {})
    declared = {vi.name: vi for vi in proto.graph.input}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise UsageError(f"--input has arrays for {', '.join(unknown)}, which are not inputs of the model (inputs: {', '.join(declared)})")
    unknown = sorted(set(shapes or {}) - set(declared))
    if unknown:
        raise UsageError(f"--shape names {', '.join(unknown)}, which are not inputs of the model (inputs: {', '.join(declared)})")
    for name, arr in given.items():
        elem = declared[name].type.tensor_type.elem_type
        want = helper.tensor_dtype_to_np_dtype(elem) if elem else None
        if want is not None and arr.dtype != want:
            raise UsageError(f"--input {name!r} is {arr.dtype}, the model declares {np.dtype(want)}")
    all_dims = {**default_dims(proto), **dict(dims or {})}
    feeds = random_feeds(proto, seed=seed, dims=all_dims, shapes={k: list(v) for k, v in (shapes or {}).items()})
    rng = np.random.default_rng(seed + 1)
    for name, rows in _gather_rows(proto).items():
        if name in feeds and name not in given and np.issubdtype(feeds[name].dtype, np.integer) and "mask" not in name.lower():
            feeds[name] = rng.integers(0, rows, size=feeds[name].shape).astype(feeds[name].dtype)
    feeds.update(given)
    return feeds
