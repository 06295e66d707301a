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

Formulas are keyed by ``(domain, op_type)`` in the op table (:mod:`onnxforge.kernels.table`),
which collects the :class:`~onnxforge.kernels.costs.formula.FormulaSet` of each formula module. Each entry also says what kind of work the op does (``"matmul"``:
dense products that run on matrix units; ``"vector"``: elementwise and reductions;
``"movement"``: pure data movement, zero FLOPs), which the roofline latency model uses.
An operator without an entry is reported as "no formula" by the cost model and counts zero.
"""

from __future__ import annotations

from onnxforge.kernels.costs.formula import (
    MATMUL,
    MOVEMENT,
    MS_DOMAIN,
    VECTOR,
    CostCall,
    CostFn,
    CostFormula,
    FormulaSet,
    MissingShape,
    OpCost,
    TensorInfo,
    elem_bits,
    elementwise,
    ints,
)
from onnxforge.kernels.table import TABLE

__all__ = [
    "MATMUL",
    "MOVEMENT",
    "MS_DOMAIN",
    "VECTOR",
    "CostCall",
    "CostFn",
    "CostFormula",
    "FormulaSet",
    "MissingShape",
    "OpCost",
    "TensorInfo",
    "elem_bits",
    "elementwise",
    "formulas",
    "get_formula",
    "ints",
    "op_cost",
]


def get_formula(op_type: str, domain: str = "") -> CostFormula | None:
    """The formula of ``domain::op_type``, or None when there is none."""
    return TABLE.cost(op_type, domain)


def formulas() -> list[tuple[str, str]]:
    """Every ``(domain, op_type)`` with a formula, sorted."""
    return TABLE.cost_keys()


def op_cost(call: CostCall) -> OpCost:
    """The cost of one call; :class:`KeyError` when no formula exists, :class:`MissingShape`
    when a needed shape is unknown."""
    f = get_formula(call.op_type, call.domain)
    if f is None:
        raise KeyError(f"{call.domain + '::' if call.domain else ''}{call.op_type}")
    return f.fn(call)
