"""Measured choices between equivalent onnxruntime graphs on this machine.

Some contrib ops pay on one machine and not on another: onnxruntime 1.32's CPU
SkipLayerNormalization takes 216 us where Add + LayerNormalization take 41 us on [1, 128, 384]
with one thread here, but fuses away launches on GPUs. For ``--target cpu`` the compiler asks
:func:`skip_layer_norm_pays`, which times both forms once (about a second) and caches the answer
next to the CPU cost profile (``$ONNXFORGE_CACHE``), keyed by CPU and onnxruntime version.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def _time_pair(hidden: int = 768, seq: int = 128) -> tuple[float, float]:
    """Median seconds of (Add + Add + LayerNormalization, SkipLayerNormalization) on one thread."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxforge.cost.roofline import _median_time

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), n) for n in ("g", "b", "bias")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, seq, hidden]) for n in ("x", "r")]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, hidden])]

    def model(nodes, ms: bool):  # type: ignore[no-untyped-def]
        ops = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
        return helper.make_model(helper.make_graph(nodes, "g", io, out, inits), opset_imports=ops, ir_version=8)

    plain = model(
        [
            helper.make_node("Add", ["x", "bias"], ["xb"]),
            helper.make_node("Add", ["xb", "r"], ["s"]),
            helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1),
        ],
        ms=False,
    )
    fused = model([helper.make_node("SkipLayerNormalization", ["x", "r", "g", "b", "bias"], ["y"], domain="com.microsoft")], ms=True)
    feeds = {"x": rng.standard_normal((1, seq, hidden)).astype(np.float32), "r": rng.standard_normal((1, seq, hidden)).astype(np.float32)}
    # Optimizations off: onnxruntime would otherwise fuse the plain form into the other.
    import onnxruntime as ort

    def sess(m):  # type: ignore[no-untyped-def]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    return _median_time(sess(plain), feeds, 31), _median_time(sess(fused), feeds, 31)


def skip_layer_norm_pays(*, refresh: bool = False) -> bool:
    """True when onnxruntime's CPU SkipLayerNormalization beats Add + LayerNormalization here."""
    from onnxforge.cost.roofline import _cpu_key, cache_dir

    path = cache_dir() / f"ort-choices-{_cpu_key()}.json"
    data: dict[str, object] = {}
    if path.is_file() and not refresh:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    if "skip_layer_norm" not in data:
        try:
            plain, fused = _time_pair()
        except Exception as e:  # no contrib kernels: never fuse
            log.info("SkipLayerNormalization could not be timed (%s): not fused", e)
            return False
        data["skip_layer_norm"] = bool(fused < plain * 0.95)
        data["skip_layer_norm_us"] = {"add_layernorm": round(plain * 1e6, 1), "skip_layernorm": round(fused * 1e6, 1)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot cache onnxruntime choices at %s: %s", path, e)
        log.info("SkipLayerNormalization %s here (%s)", "pays" if data["skip_layer_norm"] else "does not pay", data["skip_layer_norm_us"])
    return bool(data["skip_layer_norm"])
