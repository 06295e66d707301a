"""The op table: one entry per ``(domain, op_type)`` holding everything the compiler knows how
to do with that operator, its numpy kernel (with the opset range it implements) and its cost
formula.

The table is built once, explicitly, from the :class:`~onnxforge.kernels.kernel.KernelSet` and
:class:`~onnxforge.kernels.costs.formula.FormulaSet` of the modules listed below: adding a
kernel module means adding it to :data:`KERNEL_SETS`, and nothing registers itself by being
imported somewhere else. A duplicate (two kernels or two formulas for one op) fails at import.

Lookups go through :mod:`onnxforge.kernels.registry` (evaluate, get_kernel) and
:mod:`onnxforge.kernels.costs.registry` (get_formula, op_cost), which read this table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from onnxforge.kernels import contrib, elementwise, linalg, reductions, tensor_ops
from onnxforge.kernels.costs import attention as attention_costs
from onnxforge.kernels.costs import linalg as linalg_costs
from onnxforge.kernels.costs import movement as movement_costs
from onnxforge.kernels.costs import pointwise as pointwise_costs
from onnxforge.kernels.costs import recurrent as recurrent_costs
from onnxforge.kernels.costs import windows as windows_costs
from onnxforge.kernels.costs.formula import CostFormula, norm_domain
from onnxforge.kernels.kernel import Kernel

#: Modules whose kernels the table holds (contrib: onnxruntime's com.microsoft ops the compiler emits).
KERNEL_SETS = (elementwise.KERNELS, tensor_ops.KERNELS, reductions.KERNELS, linalg.KERNELS, contrib.KERNELS)
#: Modules whose cost formulas the table holds.
FORMULA_SETS = (
    linalg_costs.FORMULAS,
    recurrent_costs.FORMULAS,
    attention_costs.FORMULAS,
    pointwise_costs.FORMULAS,
    windows_costs.FORMULAS,
    movement_costs.FORMULAS,
)


@dataclass(frozen=True)
class OpEntry:
    """What the compiler knows about one operator.

    ``kernel`` evaluates it from opset ``min_opset`` on (None: not evaluated at compile time;
    constant folding may still fall back to ``onnx.reference``); ``cost`` counts its arithmetic
    (None: the cost model reports "no formula")."""

    domain: str
    op_type: str
    kernel: Kernel | None = None
    cost: CostFormula | None = None

    @property
    def min_opset(self) -> int:
        return self.kernel.min_opset if self.kernel is not None else 1


class OpTable:
    """Entries by ``(domain, op_type)`` (the default domain is ``""``)."""

    def __init__(self, kernels: Iterable[Kernel], formulas: Iterable[CostFormula]) -> None:
        self._entries: dict[tuple[str, str], OpEntry] = {}
        for k in kernels:
            key = (norm_domain(k.domain), k.op_type)
            old = self._entries.get(key)
            if old is not None and old.kernel is not None:
                raise ValueError(f"kernel for {k.op_type!r} defined twice")
            self._entries[key] = OpEntry(key[0], k.op_type, k, old.cost if old else None)
        for f in formulas:
            key = (norm_domain(f.domain), f.op_type)
            old = self._entries.get(key)
            if old is not None and old.cost is not None:
                raise ValueError(f"cost formula for {key} defined twice")
            self._entries[key] = OpEntry(key[0], f.op_type, old.kernel if old else None, f)

    def entry(self, op_type: str, domain: str = "") -> OpEntry | None:
        return self._entries.get((norm_domain(domain), op_type))

    def kernel(self, op_type: str, domain: str = "", opset: int | None = None) -> Kernel | None:
        """The kernel of ``domain::op_type`` valid at ``opset`` (None when there is none)."""
        e = self._entries.get((norm_domain(domain), op_type))
        if e is None or e.kernel is None or (opset is not None and opset < e.kernel.min_opset):
            return None
        return e.kernel

    def cost(self, op_type: str, domain: str = "") -> CostFormula | None:
        e = self._entries.get((norm_domain(domain), op_type))
        return None if e is None else e.cost

    def kernel_keys(self) -> list[tuple[str, str]]:
        """Every ``(domain, op_type)`` with a kernel, sorted."""
        return sorted(key for key, e in self._entries.items() if e.kernel is not None)

    def kernel_ops(self) -> list[str]:
        """Default-domain ops with a kernel, sorted."""
        return sorted(op for (domain, op), e in self._entries.items() if e.kernel is not None and domain == "")

    def cost_keys(self) -> list[tuple[str, str]]:
        """Every ``(domain, op_type)`` with a cost formula, sorted."""
        return sorted(key for key, e in self._entries.items() if e.cost is not None)

    def entries(self) -> list[OpEntry]:
        return [self._entries[k] for k in sorted(self._entries)]


def _chain(sets: Iterable[Iterable[Kernel]]) -> list[Kernel]:
    return [k for s in sets for k in s]


#: The op table.
TABLE = OpTable(_chain(KERNEL_SETS), [f for s in FORMULA_SETS for f in s])
