"""onnxforge: an ONNX graph-rewriting compiler.

Quick start::

    import onnxforge
    result = onnxforge.compile("model.onnx", pipeline="lossless")
    result.save("model.opt.onnx")
    print(result.report.summary())
"""

from __future__ import annotations

__version__ = "0.1.0"

from onnxforge.api import CompileResult, compile  # noqa: E402
from onnxforge.errors import (  # noqa: E402
    ModelError,
    OnnxForgeError,
    PassError,
    UsageError,
    VerificationError,
)
from onnxforge.modelio import load, save  # noqa: E402
from onnxforge.passmanager import (  # noqa: E402
    FixedPoint,
    Pass,
    PassContext,
    PassManager,
    PassOptions,
    PassResult,
    Sequential,
)

__all__ = [
    "CompileResult",
    "FixedPoint",
    "Pass",
    "PassContext",
    "PassManager",
    "PassOptions",
    "PassResult",
    "Sequential",
    "compile",
    "load",
    "save",
    "ModelError",
    "OnnxForgeError",
    "PassError",
    "UsageError",
    "VerificationError",
    "__version__",
]
