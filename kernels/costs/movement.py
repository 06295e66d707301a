"""Operators that move, copy or describe data without arithmetic: zero FLOPs.

Their cost is the bytes they read and write, which the cost model derives from shapes
(``Shape``/``Size`` read no data at all). Control flow (``If``, ``Loop``, ``Scan``) is not
here: the cost model counts the subgraphs it runs (see :mod:`onnxforge.cost`).
"""

from __future__ import annotations

from onnxforge.kernels.costs.formula import MOVEMENT, CostCall, FormulaSet, OpCost

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()

#: Default-domain operators that only move data.
MOVEMENT_OPS = (
    "Reshape Transpose Concat Split Slice Gather GatherElements GatherND ScatterND "
    "ScatterElements Scatter Expand Tile Pad Squeeze Unsqueeze Flatten Identity Shape Size "
    "Constant ConstantOfShape Range DepthToSpace SpaceToDepth Trilu OneHot NonZero Dropout "
    "EyeLike Compress ReverseSequence CenterCropPad SplitToSequence ConcatFromSequence "
    "SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength "
    "Optional OptionalGetElement OptionalHasElement Col2Im MaxUnpool BitCast TensorScatter "
    "MelWeightMatrix Unique"
).split()


@FORMULAS.register(["ReorderInput", "ReorderOutput"], kind=MOVEMENT, domain="com.microsoft.nchwc")
@FORMULAS.register(MOVEMENT_OPS, kind=MOVEMENT)
def _movement(call: CostCall) -> OpCost:
    return OpCost(0, 0)
