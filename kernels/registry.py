"""The kernel registry: numpy reference implementations of standard ONNX operators.

A kernel computes one operator's outputs from numpy inputs. Kernels exist so that passes (above
all constant folding) can evaluate parts of a graph at compile time, so the contract is strict:

* A kernel returns **exactly** what onnxruntime returns for the same inputs, bit for bit for data
  movement and integer arithmetic, and within float-reordering tolerance for float reductions,
  matrix products and transcendental functions (computed in float64 and rounded once).
* Where the ONNX result is implementation-defined or the runtime would fail (integer division
  by zero, float-to-int casts out of range, out-of-bounds indices, float ``Range`` whose
  spec formula and runtime accumulation disagree, ...) the kernel refuses with
  :class:`Unsupported` or :class:`InvalidInputs` instead of guessing. A refused node is simply
  left in the graph.
* Attributes a kernel does not know (legacy ``broadcast``/``consumed_inputs``, attributes of
  opsets newer than the kernel) make :func:`evaluate` refuse, so a semantics change in a new
  opset can never be silently mis-evaluated.

Usage::

    from onnxforge.kernels.registry import evaluate, get_kernel
    (y,) = evaluate("Add", [a, b], opset=17)

Kernels live in :mod:`onnxforge.kernels.elementwise`, :mod:`~onnxforge.kernels.tensor_ops`,
:mod:`~onnxforge.kernels.reductions` and :mod:`~onnxforge.kernels.linalg`; they register
themselves with :func:`register` when first needed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Modules that define kernels (imported on first lookup).
_KERNEL_MODULES = (
    "onnxforge.kernels.elementwise",
    "onnxforge.kernels.tensor_ops",
    "onnxforge.kernels.reductions",
    "onnxforge.kernels.linalg",
)


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


_REGISTRY: dict[str, Kernel] = {}
_loaded = False


def register(
    op_types: str | Iterable[str],
    *,
    attrs: Iterable[str] = (),
    min_opset: int = 1,
    output_elements: SizeFn | None = None,
    shape_only: bool = False,
) -> Callable[[KernelFn], KernelFn]:
    """Decorator registering ``fn`` as the kernel of one or more default-domain operators."""
    names = [op_types] if isinstance(op_types, str) else list(op_types)

    def deco(fn: KernelFn) -> KernelFn:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"kernel for {name!r} registered twice")
            _REGISTRY[name] = Kernel(
                name, fn, frozenset(attrs), min_opset, output_elements, shape_only
            )
        return fn

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _KERNEL_MODULES:
            importlib.import_module(mod)


def registered_ops() -> list[str]:
    """Names of every operator with a kernel, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_kernel(op_type: str, domain: str = "", opset: int | None = None) -> Kernel | None:
    """The kernel for ``op_type`` in ``domain`` at ``opset`` (None when there is none)."""
    if domain not in ("", "ai.onnx"):
        return None
    _ensure_loaded()
    k = _REGISTRY.get(op_type)
    if k is None or (opset is not None and opset < k.min_opset):
        return None
    return k


def _check_call(kernel: Kernel, call: KernelCall) -> None:
    unknown = set(call.attrs) - kernel.attrs
    if unknown:
        raise Unsupported(f"{call.op_type}: attribute(s) {', '.join(sorted(unknown))} not supported")
    if call.opset < kernel.min_opset:
        raise Unsupported(f"{call.op_type}: opset {call.opset} predates the kernel (>= {kernel.min_opset})")


def estimate_output_elements(call: KernelCall) -> int | None:
    """Output elements of ``call`` computed from input shapes only, for kernels that declare an
    estimator (None otherwise: those kernels never produce much more than they read)."""
    kernel = get_kernel(call.op_type)
    if kernel is None or kernel.output_elements is None:
        return None
    try:
        return int(kernel.output_elements(call))
    except KernelError:
        raise
    except Exception as e:  # malformed shapes: the runtime would fail as well
        raise InvalidInputs(f"{call.op_type}: {type(e).__name__}: {e}") from e


def evaluate(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    opset: int,
    domain: str = "",
    num_outputs: int = 1,
) -> list[np.ndarray]:
    """Compute the outputs of one operator application.

    Returns one freshly allocated, C-contiguous array per output (never a view of an input).
    Raises :class:`Unsupported` or :class:`InvalidInputs` (both :class:`KernelError`) when the
    result cannot be computed faithfully; any other exception inside a kernel is reported as
    :class:`InvalidInputs`.
    """
    kernel = get_kernel(op_type, domain)
    if kernel is None:
        raise Unsupported(f"no kernel for {domain + '::' if domain else ''}{op_type}")
    call = KernelCall(op_type, list(inputs), dict(attrs or {}), opset, num_outputs)
    _check_call(kernel, call)
    try:
        with np.errstate(all="ignore"):
            result = kernel.fn(call)
    except KernelError:
        raise
    except Exception as e:
        raise InvalidInputs(f"{op_type}: {type(e).__name__}: {e}") from e
    outs = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(outs) != num_outputs:
        raise InvalidInputs(f"{op_type}: kernel produced {len(outs)} outputs, the node has {num_outputs}")
    present = call.present()
    return [_own(np.asarray(o), present) for o in outs]


def _own(out: np.ndarray, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """``out`` as an array that owns its C-contiguous data and aliases no input."""
    if (
        out.flags.c_contiguous
        and out.flags.owndata
        and not any(out is x or np.may_share_memory(out, x) for x in inputs)
    ):
        return out
    return np.array(out, order="C", copy=True)
