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
:mod:`~onnxforge.kernels.reductions` and :mod:`~onnxforge.kernels.linalg`, each in its own
:class:`~onnxforge.kernels.kernel.KernelSet`; :mod:`onnxforge.kernels.table` collects them,
with the cost formulas, into the one op table this module reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxforge.kernels.kernel import (
    InvalidInputs,
    Kernel,
    KernelCall,
    KernelError,
    KernelFn,
    KernelSet,
    SizeFn,
    Unsupported,
)
from onnxforge.kernels.table import TABLE

__all__ = [
    "InvalidInputs",
    "Kernel",
    "KernelCall",
    "KernelError",
    "KernelFn",
    "KernelSet",
    "SizeFn",
    "Unsupported",
    "estimate_output_elements",
    "evaluate",
    "get_kernel",
    "registered_ops",
]


def registered_ops() -> list[str]:
    """Names of every operator with a kernel, sorted."""
    return TABLE.kernel_ops()


def get_kernel(op_type: str, domain: str = "", opset: int | None = None) -> Kernel | None:
    """The kernel for ``op_type`` in ``domain`` at ``opset`` (None when there is none)."""
    return TABLE.kernel(op_type, domain, opset)


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
