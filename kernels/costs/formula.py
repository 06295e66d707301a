"""What a cost formula is: the call it sees (shapes and element types, never data), the
:class:`OpCost` it returns, and :class:`FormulaSet`, the explicit list of formulas one module
defines (collected by :mod:`onnxforge.kernels.table`).

See :mod:`onnxforge.kernels.costs.registry` for the counting conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

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


def norm_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


class FormulaSet:
    """The cost formulas one module defines. ``@FORMULAS.register("Relu")`` appends to the
    module's own set; :mod:`onnxforge.kernels.table` collects every set into the op table."""

    def __init__(self) -> None:
        self._formulas: list[CostFormula] = []

    def register(
        self, op_types: str | Iterable[str], *, kind: str = VECTOR, domain: str = ""
    ) -> Callable[[CostFn], CostFn]:
        """Decorator adding ``fn`` as the cost formula of ``op_types`` in ``domain``."""
        names = [op_types] if isinstance(op_types, str) else list(op_types)
        if kind not in (MATMUL, VECTOR, MOVEMENT):
            raise ValueError(f"unknown kind {kind!r}")

        def deco(fn: CostFn) -> CostFn:
            for name in names:
                self._formulas.append(CostFormula(norm_domain(domain), name, fn, kind))
            return fn

        return deco

    def __iter__(self) -> Iterator[CostFormula]:
        return iter(self._formulas)


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
