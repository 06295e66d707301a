"""onnxforge: an ONNX graph-rewriting compiler.

Quick start::

    import onnxforge
    result = onnxforge.compile("model.onnx", pipeline="lossless")
    result.save("model.opt.onnx")
    print(result.report.summary())
"""

from __future__ import annotations

__version__ = "0.1.0"

from onnxforge.errors import (  # noqa: E402
    ModelError,
    OnnxForgeError,
    PassError,
    UsageError,
    VerificationError,
)

__all__ = [
    "ModelError",
    "OnnxForgeError",
    "PassError",
    "UsageError",
    "VerificationError",
    "__version__",
]
