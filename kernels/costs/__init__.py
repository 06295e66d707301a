"""Cost formulas of ONNX operators (MACs and FLOPs from shapes), keyed by (domain, op type).

See :mod:`onnxforge.kernels.costs.registry` for the conventions; the cost model that applies
them to a whole model is :mod:`onnxforge.cost`.
"""

from onnxforge.kernels.costs.registry import (
    CostCall,
    MissingShape,
    OpCost,
    TensorInfo,
    elem_bits,
    formulas,
    get_formula,
    op_cost,
)

__all__ = ["CostCall", "MissingShape", "OpCost", "TensorInfo", "elem_bits", "formulas", "get_formula", "op_cost"]
