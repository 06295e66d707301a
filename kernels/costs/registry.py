"""The cost-formula registry: how much arithmetic one operator application performs.

A cost formula sees the shapes and element types of a node's inputs and outputs (never their
data) plus its attributes, and returns an :class:`OpCost`:

* ``macs``: multiply-accumulates of the operator's matrix-product part (Conv, Gemm, MatMul,
  Einsum, recurrent gates, attention products). Elementwise work is never counted as MACs.
* ``flops``: all floating-point (or integer) operations: ``2 * macs`` plus the elementwise work
  (bias adds, activations, normalizations, reductions, ...), counted as the number of arithmetic
  operations the ONNX specification's formula performs per output element (documented next to
  each formula).

Bytes moved are not computed by the formulas: the cost model derives them from the tensors'
shapes and element types (:mod:`onnxforge.cost`).

Formulas are keyed by ``(domain, op_type)`` in an explicit table filled by the modules listed in
:data:`_FORMULA_MODULES`. Each entry also says what kind of work the op does (``"matmul"``:
dense products that run on matrix units; ``"vector"``: elementwise and reductions;
``"movement"``: pure data movement, zero FLOPs), which the roofline latency model uses.
An operator without an entry is reported as "no formula" by the cost model and counts zero.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

#: Modules that define cost formulas (imported on first lookup).
_FORMULA_MODULES = (
    "onnxforge.kernels.costs.linalg",
    "onnxforge.kernels.costs.recurrent",
    "onnxforge.kernels.costs.attention",
    "onnxforge.kernels.costs.pointwise",
    "onnxforge.kernels.costs.windows",
    "onnxforge.kernels.costs.movement",
)

MS_DOMAIN = "com.microsoft"

#: Element types stored in fewer than 8 bits.
_SUB_BYTE_BITS: dict[int, int] = {
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.UINT4: 4,
}
for _name, _bits in (("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)):
    if hasattr(onnx.TensorProto, _name):  # newer onnx releases only
        _SUB_BYTE_BITS[getattr(onnx.TensorProto, _name)] = _bits


def elem_bits(elem_type: int) -> int:
    """Bits per element of an ONNX tensor element type (0 for strings and unknown types)."""
    if elem_type in _SUB_BYTE_BITS:
        return _SUB_BYTE_BITS[elem_type]
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize) * 8
    except Exception:
        return 0


class MissingShape(Exception):
    """A formula needs a shape (or a rank) that the cost model could not determine."""


@dataclass(frozen=True)
class TensorInfo:
    """Shape (all dimensions known) and ONNX element type of one tensor."""

    shape: tuple[int, ...]
    elem_type: int

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return (self.numel * elem_bits(self.elem_type) + 7) // 8

    @property
    def is_float(self) -> bool:
        return self.elem_type in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.BFLOAT16,
            onnx.TensorProto.DOUBLE,
        )


@dataclass(frozen=True)
class CostCall:
    """What a formula sees: attributes, and shape/type of each input and output (None where the
    input is omitted or its shape is unknown)."""

    op_type: str
    domain: str = ""
    inputs: Sequence[TensorInfo | None] = ()
    outputs: Sequence[TensorInfo | None] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 21

    def input(self, i: int) -> TensorInfo | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def output(self, i: int = 0) -> TensorInfo | None:
        return self.outputs[i] if i < len(self.outputs) else None

    def require_input(self, i: int) -> TensorInfo:
        t = self.input(i)
        if t is None:
            raise MissingShape(f"{self.op_type}: shape of input {i} unknown")
        return t

    def require_output(self, i: int = 0) -> TensorInfo:
        t = self.output(i)
        if t is None:
            raise MissingShape(f"{self.op_type}: shape of output {i} unknown")
        return t

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def out_elements(self) -> int:
        """Elements of all known outputs."""
        return sum(t.numel for t in self.outputs if t is not None)


@dataclass(frozen=True)
class OpCost:
    """The arithmetic of one operator application (see the module docstring)."""

    macs: int = 0
    flops: int = 0

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(self.macs + other.macs, self.flops + other.flops)

    def scaled(self, k: int) -> OpCost:
        return OpCost(self.macs * k, self.flops * k)


CostFn = Callable[[CostCall], OpCost]

MATMUL, VECTOR, MOVEMENT = "matmul", "vector", "movement"


@dataclass(frozen=True)
class CostFormula:
    """A registered formula: the function and the kind of work (matmul/vector/movement)."""

    domain: str
    op_type: str
    fn: CostFn
    kind: str


_TABLE: dict[tuple[str, str], CostFormula] = {}
_loaded = False


def _norm_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def register_cost(
    op_types: str | Iterable[str], *, kind: str = VECTOR, domain: str = ""
) -> Callable[[CostFn], CostFn]:
    """Decorator registering ``fn`` as the cost formula of ``op_types`` in ``domain``."""
    names = [op_types] if isinstance(op_types, str) else list(op_types)
    if kind not in (MATMUL, VECTOR, MOVEMENT):
        raise ValueError(f"unknown kind {kind!r}")

    def deco(fn: CostFn) -> CostFn:
        for name in names:
            key = (_norm_domain(domain), name)
            if key in _TABLE:
                raise ValueError(f"cost formula for {key} registered twice")
            _TABLE[key] = CostFormula(key[0], name, fn, kind)
        return fn

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _FORMULA_MODULES:
            importlib.import_module(mod)


def get_formula(op_type: str, domain: str = "") -> CostFormula | None:
    """The formula of ``domain::op_type``, or None when there is none."""
    _ensure_loaded()
    return _TABLE.get((_norm_domain(domain), op_type))


def formulas() -> list[tuple[str, str]]:
    """Every ``(domain, op_type)`` with a formula, sorted."""
    _ensure_loaded()
    return sorted(_TABLE)


def op_cost(call: CostCall) -> OpCost:
    """The cost of one call; :class:`KeyError` when no formula exists, :class:`MissingShape`
    when a needed shape is unknown."""
    f = get_formula(call.op_type, call.domain)
    if f is None:
        raise KeyError(f"{call.domain + '::' if call.domain else ''}{call.op_type}")
    return f.fn(call)


def elementwise(per_element: int) -> CostFn:
    """A formula counting ``per_element`` operations per output element."""

    def fn(call: CostCall) -> OpCost:
        return OpCost(0, per_element * call.require_output(0).numel)

    return fn


def ints(value: Any, default: Sequence[int] = ()) -> list[int]:
    """An INTS attribute value as a list (``default`` when absent)."""
    if value is None:
        return list(default)
    return [int(v) for v in np.asarray(value).reshape(-1)]
