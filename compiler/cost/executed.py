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
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxforge.equivalence import random_feeds
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.runtime.session import create_session, run_session

log = logging.getLogger(__name__)


def executed_model(model: Model | onnx.ModelProto) -> Model | None:
    """onnxruntime's optimized form of ``model`` (CPU, ORT_ENABLE_ALL, one thread), or None
    (logged) when onnxruntime cannot optimize or write it."""
    proto = to_proto(model) if isinstance(model, Model) else model
    try:
        with tempfile.TemporaryDirectory(prefix="onnxforge-executed-") as tmp:
            src, out = Path(tmp) / "model.onnx", Path(tmp) / "executed.onnx"
            src.write_bytes(proto.SerializeToString())
            failure = _optimize(src, out)
            if failure is not None or not out.is_file():
                log.info("onnxruntime's executed graph unavailable: %s", failure or "nothing written")
                return None
            return from_proto(onnx.load(str(out)))
    except Exception as e:  # onnxruntime rejects or cannot serialize: estimate the graph as given
        log.info("onnxruntime's executed graph unavailable: %s", " ".join(str(e).split())[:200])
        return None


def _optimize(src: Path, out: Path) -> str | None:
    """Let onnxruntime write its optimized ``src`` to ``out``, in a forked child where ``fork``
    exists: its optimizer can abort the process on some invalid models (constant folding turns
    computed pads into constants on which onnx's inference asserts), and an estimate must not
    take the caller down. Returns why it failed, or None."""
    if not hasattr(os, "fork"):
        create_session(str(src), optimization="all", threads=1, optimized_model_path=out, guard=False)
        return None
    pid = os.fork()
    if pid == 0:  # the child: one thread, exits without running the parent's cleanup
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # an abort's message is the parent's to report, in one line
            create_session(str(src), optimization="all", threads=1, optimized_model_path=out, guard=False)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"onnxruntime was killed by signal {os.WTERMSIG(status)} while optimizing"
    if os.WEXITSTATUS(status) != 0:
        return "onnxruntime refused the model"
    return None


def branch_conditions(
    model: Model, input_shapes: Mapping[str, tuple[int, ...]], feeds: Mapping[str, np.ndarray] | None = None
) -> dict[str, bool]:
    """The value of each main-graph ``If`` condition (by value name) on one onnxruntime run of
    ``model`` with ``feeds`` (default: seeded random inputs of ``input_shapes``): which branch
    runs, for the latency of what onnxruntime executes. Empty when there is no ``If`` or the run
    fails (logged)."""
    proto = to_proto(model)
    conds = [n.input[0] for n in proto.graph.node if n.op_type == "If" and n.domain in ("", "ai.onnx") and n.input]
    if not conds:
        return {}
    outputs = {o.name for o in proto.graph.output}
    for name in dict.fromkeys(conds):
        if name not in outputs:
            proto.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, None))
    try:
        run_feeds = random_feeds(proto, shapes={k: list(v) for k, v in input_shapes.items()})
        run_feeds.update(feeds or {})
        sess = create_session(proto, optimization="disable", threads=1, guard=False)
        values = run_session(sess, run_feeds, list(dict.fromkeys(conds)), seconds=5.0)
    except Exception as e:  # the costlier branch is counted instead
        log.info("If conditions not measured: %s", " ".join(str(e).split())[:200])
        return {}
    return {k: bool(np.asarray(v).reshape(-1)[0]) for k, v in values.items() if np.asarray(v).size == 1}
