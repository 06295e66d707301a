"""The graph onnxruntime actually executes: its CPU provider's optimized model at
ORT_ENABLE_ALL (constant folding, its fusions such as Conv+activation, Gemm, LayerNorm, GELU and
attention, Q/DQ into integer kernels, the NCHWc layout), as onnxruntime itself writes it out.

Latency is estimated on this graph, since that is what users run: fewer nodes than the model
file (each saves a dispatch) and fused kernels with their own costs. The optimized model is
written to a temporary folder and read back into the IR without the ONNX checker (onnxruntime
writes contrib ops and, for LayerNormalization, opset combinations the checker rejects).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.runtime.session import create_session

log = logging.getLogger(__name__)


def executed_model(model: Model | onnx.ModelProto) -> Model | None:
    """onnxruntime's optimized form of ``model`` (CPU, ORT_ENABLE_ALL, one thread), or None
    (logged) when onnxruntime cannot optimize or write it."""
    proto = to_proto(model) if isinstance(model, Model) else model
    try:
        with tempfile.TemporaryDirectory(prefix="onnxforge-executed-") as tmp:
            out = Path(tmp) / "executed.onnx"
            create_session(proto, optimization="all", threads=1, optimized_model_path=out, guard=False)
            if not out.is_file():
                return None
            return from_proto(onnx.load(str(out)))
    except Exception as e:  # onnxruntime rejects or cannot serialize: estimate the graph as given
        log.info("onnxruntime's executed graph unavailable: %s", " ".join(str(e).split())[:200])
        return None
