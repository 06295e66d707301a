"""The op table is built explicitly from the kernel and formula sets it lists: one entry per
(domain, op) holds both the kernel and the cost formula, and nothing else can register."""

from __future__ import annotations

import numpy as np
import pytest

from onnxforge.kernels.costs.formula import FormulaSet, OpCost
from onnxforge.kernels.costs.registry import formulas, get_formula
from onnxforge.kernels.kernel import KernelSet
from onnxforge.kernels.registry import get_kernel, registered_ops
from onnxforge.kernels.table import FORMULA_SETS, KERNEL_SETS, TABLE, OpTable


def test_one_entry_holds_kernel_and_cost():
    e = TABLE.entry("Add")
    assert e is not None and e.kernel is get_kernel("Add") and e.cost is get_formula("Add")
    assert TABLE.entry("Add", "ai.onnx") is e  # the default domain has two spellings
    conv = TABLE.entry("Conv")
    assert conv is not None and conv.kernel is None and conv.cost is not None  # costed, not folded


def test_lookups_read_the_table_only():
    assert registered_ops() == sorted({k.op_type for s in KERNEL_SETS for k in s if k.domain == ""})
    assert formulas() == sorted({(f.domain, f.op_type) for s in FORMULA_SETS for f in s})


def test_a_set_outside_the_table_registers_nothing():
    stray = KernelSet()

    @stray.register("NotAnOnnxOp")
    def _k(call):  # type: ignore[no-untyped-def]
        return np.zeros(1)

    assert len(stray) == 1 and get_kernel("NotAnOnnxOp") is None


def test_duplicates_are_refused_when_the_table_is_built():
    a, b = KernelSet(), KernelSet()
    a.register("Relu")(lambda call: call.require(0))
    b.register("Relu")(lambda call: call.require(0))
    with pytest.raises(ValueError, match="defined twice"):
        OpTable([*a, *b], [])
    fa, fb = FormulaSet(), FormulaSet()
    fa.register("Relu")(lambda call: OpCost())
    fb.register("Relu", domain="ai.onnx")(lambda call: OpCost())
    with pytest.raises(ValueError, match="defined twice"):
        OpTable([], [*fa, *fb])


def test_kernel_opset_range_is_part_of_the_entry():
    e = TABLE.entry("IsInf")
    assert e is not None and e.min_opset == 10
    assert TABLE.kernel("IsInf", opset=9) is None and TABLE.kernel("IsInf", opset=10) is e.kernel
