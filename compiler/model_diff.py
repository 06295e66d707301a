"""Structural and numerical comparison of two models (``onnxforge diff A B``).

Structure (:func:`structural_diff`, on the IR, weights memory-mapped): nodes per op type in every
graph, graph inputs and outputs (name, element type, shape), and initializers matched by name:
added, removed, and changed (dtype or shape; or values, summarized by the largest absolute
difference, that difference relative to A's largest magnitude, and how many elements differ).

Numbers (:func:`numerical_diff`): both models on onnxruntime's CPU provider with graph
optimizations off (:class:`onnxforge.equivalence.OrtRunner`), on the same feeds, outputs matched
by name: largest absolute difference, relative difference (to A's largest magnitude), cosine
similarity and SQNR per output. :func:`interface_problems` says why two models cannot be run on
the same feeds.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxforge.equivalence import OrtRunner
from onnxforge.errors import ModelError
from onnxforge.ir import Model, Node, Value
from onnxforge.metrics.sqnr import cosine, sqnr_db
from onnxforge.tables import format_table


@dataclass
class ValueChange:
    """A graph input or output whose type differs: its type in A and in B."""

    name: str
    before: str
    after: str


@dataclass
class InitializerChange:
    """An initializer in both models whose dtype, shape or values differ. Value figures are
    set when dtype and shape agree: ``max_abs`` the largest ``|b - a|``, ``max_rel`` that
    divided by A's largest magnitude, ``changed`` the elements that differ of ``size``."""

    name: str
    before: str
    after: str
    max_abs: float | None = None
    max_rel: float | None = None
    changed: int | None = None
    size: int | None = None
    note: str = ""


@dataclass
class OutputDiff:
    """One output of both models on the same feeds (``note`` says why figures are missing)."""

    name: str
    shape_before: tuple[int, ...] | None
    shape_after: tuple[int, ...] | None
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    sqnr_db: float | None = None
    equal: bool | None = None
    note: str = ""


@dataclass
class ModelDiff:
    """What differs between models A and B (module docstring)."""

    nodes: tuple[int, int]
    op_types: dict[str, tuple[int, int]] = field(default_factory=dict)
    inputs_added: list[str] = field(default_factory=list)
    inputs_removed: list[str] = field(default_factory=list)
    inputs_changed: list[ValueChange] = field(default_factory=list)
    outputs_added: list[str] = field(default_factory=list)
    outputs_removed: list[str] = field(default_factory=list)
    outputs_changed: list[ValueChange] = field(default_factory=list)
    initializers_added: dict[str, str] = field(default_factory=dict)
    initializers_removed: dict[str, str] = field(default_factory=dict)
    initializers_changed: list[InitializerChange] = field(default_factory=list)
    initializers_same: int = 0
    initializer_bytes: tuple[int, int] = (0, 0)
    #: Per output, when the models were run (:func:`numerical_diff`).
    outputs: list[OutputDiff] | None = None
    #: The feeds they were run on: input -> "dtype[shape]".
    feeds: dict[str, str] = field(default_factory=dict)

    @property
    def same_structure(self) -> bool:
        return not (
            self.changed_op_types()
            or self.inputs_added
            or self.inputs_removed
            or self.inputs_changed
            or self.outputs_added
            or self.outputs_removed
            or self.outputs_changed
            or self.initializers_added
            or self.initializers_removed
            or self.initializers_changed
        )

    def changed_op_types(self) -> dict[str, tuple[int, int]]:
        return {op: c for op, c in self.op_types.items() if c[0] != c[1]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "onnxforge.diff/1",
            "same_structure": self.same_structure,
            "nodes": {"a": self.nodes[0], "b": self.nodes[1]},
            "op_types": {op: {"a": a, "b": b} for op, (a, b) in self.op_types.items()},
            "inputs": {
                "added": self.inputs_added,
                "removed": self.inputs_removed,
                "changed": [{"name": c.name, "a": c.before, "b": c.after} for c in self.inputs_changed],
            },
            "outputs": {
                "added": self.outputs_added,
                "removed": self.outputs_removed,
                "changed": [{"name": c.name, "a": c.before, "b": c.after} for c in self.outputs_changed],
            },
            "initializers": {
                "added": self.initializers_added,
                "removed": self.initializers_removed,
                "changed": [
                    {
                        "name": c.name,
                        "a": c.before,
                        "b": c.after,
                        "max_abs_diff": _num(c.max_abs),
                        "max_rel_diff": _num(c.max_rel),
                        "changed_elements": c.changed,
                        "elements": c.size,
                        "note": c.note,
                    }
                    for c in self.initializers_changed
                ],
                "unchanged": self.initializers_same,
                "bytes": {"a": self.initializer_bytes[0], "b": self.initializer_bytes[1]},
            },
            "run": None
            if self.outputs is None
            else {
                "feeds": self.feeds,
                "outputs": [
                    {
                        "name": o.name,
                        "shape_a": None if o.shape_before is None else list(o.shape_before),
                        "shape_b": None if o.shape_after is None else list(o.shape_after),
                        "max_abs_diff": _num(o.max_abs),
                        "max_rel_diff": _num(o.max_rel),
                        "cosine": _num(o.cosine),
                        "sqnr_db": _num(o.sqnr_db),
                        "equal": o.equal,
                        "note": o.note,
                    }
                    for o in self.outputs
                ],
            },
        }

    def render(self, top: int = 20) -> list[str]:
        """A readable summary: counts, op types, interface, initializers, outputs."""
        bytes_a, bytes_b = self.initializer_bytes
        lines = [
            f"nodes: {self.nodes[0]} -> {self.nodes[1]}    initializer bytes: {bytes_a:,} -> {bytes_b:,}",
        ]
        ops = self.changed_op_types()
        if ops:
            lines.append("")
            lines += format_table(
                ["op type", "A", "B", "change"], [[op, str(a), str(b), f"{b - a:+d}"] for op, (a, b) in ops.items()]
            )
        else:
            lines.append("op types: same counts")
        iface = [
            *(f"input {n}: only in A" for n in self.inputs_removed),
            *(f"input {n}: only in B" for n in self.inputs_added),
            *(f"input {c.name}: {c.before} -> {c.after}" for c in self.inputs_changed),
            *(f"output {n}: only in A" for n in self.outputs_removed),
            *(f"output {n}: only in B" for n in self.outputs_added),
            *(f"output {c.name}: {c.before} -> {c.after}" for c in self.outputs_changed),
        ]
        lines.append("")
        lines += ["interface: " + ("same inputs and outputs" if not iface else "differs")] + [f"  {x}" for x in iface]
        lines.append("")
        lines.append(
            f"initializers: {len(self.initializers_removed)} only in A, {len(self.initializers_added)} only in B, "
            f"{len(self.initializers_changed)} changed, {self.initializers_same} unchanged"
        )
        for label, items in (("only in A", self.initializers_removed), ("only in B", self.initializers_added)):
            if items:
                shown = list(items.items())[:top]
                more = f", ... {len(items) - top} more" if len(items) > top else ""
                lines.append(f"  {label}: " + ", ".join(f"{n} {t}" for n, t in shown) + more)
        if self.initializers_changed:
            worst = sorted(self.initializers_changed, key=lambda c: -(c.max_rel if c.max_rel is not None else math.inf))[:top]
            lines += format_table(
                ["changed initializer", "A", "B", "max |diff|", "rel", "elements changed"],
                [
                    [
                        c.name,
                        c.before,
                        c.after if c.after != c.before else "same",
                        _g(c.max_abs),
                        _g(c.max_rel),
                        c.note or ("-" if c.changed is None else f"{c.changed:,} of {c.size or 0:,}"),
                    ]
                    for c in worst
                ],
            )
            if len(self.initializers_changed) > top:
                lines.append(f"  ... {len(self.initializers_changed) - top} more (largest relative change first; --json has all)")
        if self.outputs is not None:
            lines.append("")
            lines.append("run on: " + ", ".join(f"{k} {v}" for k, v in self.feeds.items()) + " (onnxruntime CPU, optimizations off)")
            lines += format_table(
                ["output", "max |diff|", "rel", "cosine", "SQNR dB", "note"],
                [
                    [
                        o.name,
                        _g(o.max_abs),
                        _g(o.max_rel),
                        "-" if o.cosine is None else f"{o.cosine:.6f}",
                        _g(o.sqnr_db, ".1f"),
                        o.note or ("identical" if o.equal else ""),
                    ]
                    for o in self.outputs
                ],
            )
        return lines


def _num(v: float | None) -> float | str | None:
    if v is None:
        return None
    return v if math.isfinite(v) else str(v)


def _g(v: float | None, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    return format(v, spec) if math.isfinite(v) else str(v)


def type_string(t: onnx.TypeProto | None) -> str:
    """``float32[1,3,N,N]`` for a tensor type (``?`` for an unknown dim), the type's kind otherwise."""
    if t is None:
        return "?"
    if not t.HasField("tensor_type"):
        return t.WhichOneof("value") or "?"
    tt = t.tensor_type
    elem = _dtype_name(tt.elem_type)
    if not tt.HasField("shape"):
        return elem
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return f"{elem}[{','.join(dims)}]"


def _dtype_name(elem: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() else "?"


def _tensor_string(v: Value) -> str:
    t = v.const
    if t is None:
        return type_string(v.type)
    return f"{_dtype_name(t.data_type)}[{','.join(str(d) for d in t.dims)}]"


def _op(n: Node) -> str:
    return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"


def _initializers(model: Model) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for g in model.graph.all_graphs():
        for name, v in g.initializers.items():
            out.setdefault(name, v)
    return out


def _interface(values: tuple[Value, ...]) -> dict[str, str]:
    return {v.name: type_string(v.type) for v in values if not v.is_initializer()}


def structural_diff(a: Model, b: Model) -> ModelDiff:
    """How ``b`` differs from ``a`` in structure and weights (module docstring)."""
    ops_a: Counter[str] = Counter(_op(n) for n in a.graph.walk())
    ops_b: Counter[str] = Counter(_op(n) for n in b.graph.walk())
    ops = {
        op: (ops_a[op], ops_b[op])
        for op in sorted(set(ops_a) | set(ops_b), key=lambda o: (-abs(ops_b[o] - ops_a[o]), -max(ops_a[o], ops_b[o]), o))
    }
    d = ModelDiff(nodes=(sum(ops_a.values()), sum(ops_b.values())), op_types=ops)
    for kind, va, vb in (("inputs", _interface(a.graph.inputs), _interface(b.graph.inputs)),
                         ("outputs", _interface(a.graph.outputs), _interface(b.graph.outputs))):
        getattr(d, f"{kind}_removed").extend(n for n in va if n not in vb)
        getattr(d, f"{kind}_added").extend(n for n in vb if n not in va)
        getattr(d, f"{kind}_changed").extend(ValueChange(n, va[n], vb[n]) for n in va if n in vb and va[n] != vb[n])
    ia, ib = _initializers(a), _initializers(b)
    d.initializer_bytes = (sum(v.const_nbytes() for v in ia.values()), sum(v.const_nbytes() for v in ib.values()))
    d.initializers_removed = {n: _tensor_string(v) for n, v in ia.items() if n not in ib}
    d.initializers_added = {n: _tensor_string(v) for n, v in ib.items() if n not in ia}
    for name, va_ in ia.items():
        if name not in ib:
            continue
        change = compare_tensors(name, va_, ib[name])
        if change is None:
            d.initializers_same += 1
        else:
            d.initializers_changed.append(change)
    return d


def compare_tensors(name: str, a: Value, b: Value) -> InitializerChange | None:
    """None when ``a`` and ``b`` hold the same dtype, shape and values; else what differs."""
    ta, tb = _tensor_string(a), _tensor_string(b)
    if ta != tb:
        return InitializerChange(name, ta, tb)
    try:
        x, y = a.array(), b.array()
    except Exception as e:  # an unreadable tensor (e.g. external data gone): say so, go on
        return InitializerChange(name, ta, tb, note=f"values not compared: {type(e).__name__}: {' '.join(str(e).split())[:120]}")
    if x.dtype.kind not in "biufc":
        return None if np.array_equal(x, y) else InitializerChange(name, ta, tb, changed=int(np.sum(x != y)), size=int(x.size))
    if np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
        return None
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    diff = np.abs(yf - xf)
    changed = int(np.count_nonzero(~((xf == yf) | (np.isnan(xf) & np.isnan(yf)))))
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    scale = float(np.nanmax(np.abs(xf))) if xf.size else 0.0
    return InitializerChange(name, ta, tb, max_abs, max_abs / scale if scale > 0 else math.inf, changed, int(x.size))


def interface_problems(diff: ModelDiff, a: Model, b: Model) -> list[str]:
    """Why the same feeds cannot run both models (empty when they can): inputs only in one, an
    input whose element type, rank or fixed dims differ, no output in common."""
    problems = [f"input {n!r} is only in A" for n in diff.inputs_removed]
    problems += [f"input {n!r} is only in B" for n in diff.inputs_added]
    types_a = {v.name: v.type for v in a.graph.inputs}
    types_b = {v.name: v.type for v in b.graph.inputs}
    for c in diff.inputs_changed:
        if not _compatible(types_a.get(c.name), types_b.get(c.name)):
            problems.append(f"input {c.name!r} is {c.before} in A but {c.after} in B")
    outs_a = set(_interface(a.graph.outputs))
    if not outs_a & set(_interface(b.graph.outputs)):
        problems.append("the models have no output name in common")
    return problems


def _compatible(x: onnx.TypeProto | None, y: onnx.TypeProto | None) -> bool:
    if x is None or y is None or not (x.HasField("tensor_type") and y.HasField("tensor_type")):
        return type_string(x) == type_string(y)
    tx, ty = x.tensor_type, y.tensor_type
    if tx.elem_type != ty.elem_type:
        return False
    if not (tx.HasField("shape") and ty.HasField("shape")):
        return True
    if len(tx.shape.dim) != len(ty.shape.dim):
        return False
    return all(
        not (p.HasField("dim_value") and q.HasField("dim_value")) or p.dim_value == q.dim_value
        for p, q in zip(tx.shape.dim, ty.shape.dim)
    )


def numerical_diff(
    a: str | os.PathLike[str] | onnx.ModelProto,
    b: str | os.PathLike[str] | onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
) -> list[OutputDiff]:
    """Run ``a`` and ``b`` on ``feeds`` and compare their outputs by name (module docstring);
    outputs only one model has are left out (the structural diff lists them).
    :class:`~onnxforge.errors.ModelError` when onnxruntime cannot load or run one."""
    runner = OrtRunner()
    results = []
    for label, model in (("A", a), ("B", b)):
        try:
            results.append(runner.run(model, feeds))
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"onnxruntime cannot run model {label}: {' '.join(str(e).split())[:300]}") from None
    ra, rb = results
    return [_output_diff(name, ra[name], rb[name]) for name in ra if name in rb]


def _output_diff(name: str, x: Any, y: Any) -> OutputDiff:
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        return OutputDiff(name, None, None, note="not a tensor: not compared")
    out = OutputDiff(name, tuple(x.shape), tuple(y.shape))
    if x.shape != y.shape:
        out.note = f"shapes differ: {x.shape} vs {y.shape}"
        out.equal = False
        return out
    if x.dtype != y.dtype:
        out.note = f"dtype {x.dtype} vs {y.dtype}"
    if x.dtype.kind not in "biufc" or y.dtype.kind not in "biufc":
        out.equal = bool(np.array_equal(x, y))
        if not out.equal:
            out.note = out.note or f"{int(np.sum(x != y))} of {x.size} values differ"
        return out
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    out.equal = bool(np.array_equal(xf, yf, equal_nan=True))
    if not x.size:
        return out
    diff = np.abs(yf - xf)
    out.max_abs = float(np.nanmax(diff)) if not np.all(np.isnan(diff)) else math.nan
    scale = float(np.nanmax(np.abs(xf))) if not np.all(np.isnan(xf)) else 0.0
    out.max_rel = out.max_abs / scale if scale > 0 else (0.0 if out.max_abs == 0 else math.inf)
    out.cosine = cosine(xf, yf)
    out.sqnr_db = sqnr_db(xf, yf)
    return out
