"""onnxforge: an ONNX graph-rewriting compiler.

Quick start::

    import onnxforge
    result = onnxforge.compile("model.onnx", pipeline="lossless")
    result.save("model.opt.onnx")
    print(result.report.summary())

The names below are loaded on first use (PEP 562), so that importing a low layer such as
``onnxforge.ir`` or ``onnxforge.kernels`` does not import the driver and with it every other
layer (docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS = {
    "CompileResult": "onnxforge.api",
    "compile": "onnxforge.api",
    "ModelError": "onnxforge.errors",
    "OnnxForgeError": "onnxforge.errors",
    "PassError": "onnxforge.errors",
    "UsageError": "onnxforge.errors",
    "VerificationError": "onnxforge.errors",
    "load": "onnxforge.modelio",
    "save": "onnxforge.modelio",
    "FixedPoint": "onnxforge.passmanager",
    "Pass": "onnxforge.passmanager",
    "PassContext": "onnxforge.passmanager",
    "PassManager": "onnxforge.passmanager",
    "PassOptions": "onnxforge.passmanager",
    "PassResult": "onnxforge.passmanager",
    "Sequential": "onnxforge.passmanager",
    "Target": "onnxforge.runtime.target",
}

__all__ = [
    "CompileResult",
    "compile",
    "ModelError",
    "OnnxForgeError",
    "PassError",
    "UsageError",
    "VerificationError",
    "load",
    "save",
    "FixedPoint",
    "Pass",
    "PassContext",
    "PassManager",
    "PassOptions",
    "PassResult",
    "Sequential",
    "Target",
    "__version__",
]

if TYPE_CHECKING:
    from onnxforge.api import CompileResult, compile
    from onnxforge.errors import ModelError, OnnxForgeError, PassError, UsageError, VerificationError
    from onnxforge.modelio import load, save
    from onnxforge.passmanager import (
        FixedPoint,
        Pass,
        PassContext,
        PassManager,
        PassOptions,
        PassResult,
        Sequential,
    )
    from onnxforge.runtime.target import Target


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
