"""What a kernel is: the call it sees, the errors it may raise, and :class:`KernelSet`, the
explicit list of kernels one module defines (collected by :mod:`onnxforge.kernels.table`).

See :mod:`onnxforge.kernels.registry` for the contract every kernel keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class KernelError(Exception):
    """A kernel could not produce a result; the node must be left for the runtime."""


class Unsupported(KernelError):
    """The operator, opset, attribute, data type or input values are outside what the kernel
    evaluates faithfully (including values whose ONNX result is implementation-defined)."""


class InvalidInputs(KernelError):
    """The inputs violate the operator's specification: the runtime would raise an error."""


@dataclass(frozen=True)
class KernelCall:
    """Everything a kernel sees: inputs (``None`` for omitted optional ones), python attribute
    values, the opset version of the operator's domain and the node's number of outputs."""

    op_type: str
    inputs: Sequence[np.ndarray | None]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 21
    num_outputs: int = 1

    def input(self, i: int) -> np.ndarray | None:
        """Input ``i``, or None when omitted or past the end."""
        return self.inputs[i] if i < len(self.inputs) else None

    def require(self, i: int) -> np.ndarray:
        """Input ``i``; raises :class:`InvalidInputs` when it is missing."""
        x = self.input(i)
        if x is None:
            raise InvalidInputs(f"{self.op_type}: required input {i} is missing")
        return x

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def present(self) -> list[np.ndarray]:
        """The inputs that are not omitted, in order."""
        return [x for x in self.inputs if x is not None]


KernelFn = Callable[[KernelCall], "np.ndarray | Sequence[np.ndarray]"]
SizeFn = Callable[[KernelCall], int]


@dataclass(frozen=True)
class Kernel:
    """A registered kernel.

    ``attrs`` are the attribute names it understands; ``min_opset`` the first opset whose
    semantics it implements. ``output_elements`` (for operators whose output can be much larger
    than their inputs: Expand, Tile, broadcasting, ...) returns the number of output elements
    from the inputs' shapes *without computing anything*, so callers can refuse huge results
    before allocating them. ``shape_only`` kernels read nothing but the shape of input 0.
    """

    op_type: str
    fn: KernelFn
    attrs: frozenset[str] = frozenset()
    min_opset: int = 1
    output_elements: SizeFn | None = None
    shape_only: bool = False
    #: Operator domain ("" for the default domain; e.g. "com.microsoft" for onnxruntime's).
    domain: str = ""


class KernelSet:
    """The kernels one module defines, in definition order. ``@KERNELS.register("Add")``
    appends to the module's own set; nothing global changes until the table collects it."""

    def __init__(self) -> None:
        self._kernels: list[Kernel] = []

    def register(
        self,
        op_types: str | Iterable[str],
        *,
        attrs: Iterable[str] = (),
        min_opset: int = 1,
        output_elements: SizeFn | None = None,
        shape_only: bool = False,
        domain: str = "",
    ) -> Callable[[KernelFn], KernelFn]:
        """Decorator adding ``fn`` as the kernel of one or more operators of ``domain`` (default:
        the default domain)."""
        names = [op_types] if isinstance(op_types, str) else list(op_types)

        def deco(fn: KernelFn) -> KernelFn:
            for name in names:
                self._kernels.append(Kernel(name, fn, frozenset(attrs), min_opset, output_elements, shape_only, domain))
            return fn

        return deco

    def __iter__(self) -> Iterator[Kernel]:
        return iter(self._kernels)

    def __len__(self) -> int:
        return len(self._kernels)
