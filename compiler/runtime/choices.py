"""Measured choices between equivalent onnxruntime graphs on this machine.

Some contrib ops pay on one machine and not on another: onnxruntime 1.32's CPU
SkipLayerNormalization takes 216 us where Add + LayerNormalization take 41 us on [1, 128, 384]
with one thread here, but fuses away launches on GPUs. For ``--target cpu`` the compiler asks
:func:`skip_layer_norm_pays`, which times both forms once (about a second) and caches the answer
next to the CPU cost profile (``$ONNXFORGE_CACHE``), keyed by CPU and onnxruntime version.

:func:`nchwc_block_size` finds, the same way, the channel block of onnxruntime's NCHWc layout
here (``--target cpu-native``), and checks that onnxruntime lays filters out as
:mod:`onnxforge.kernels.nchwc` does.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.errors import ModelError
from onnxforge.kernels.nchwc import reorder_filter_oihwbibo, reorder_filter_oihwbo
from onnxforge.runtime.machine import cache_dir, machine_key
from onnxforge.runtime.options import median_time, open_session, session_options

log = logging.getLogger(__name__)


def _time_pair(hidden: int = 768, seq: int = 128) -> tuple[float, float]:
    """Median seconds of (Add + Add + LayerNormalization, SkipLayerNormalization) on one thread."""
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
    def sess(m):  # type: ignore[no-untyped-def]
        return open_session(m.SerializeToString(), session_options(optimization="disable"))

    return median_time(sess(plain), feeds, 31), median_time(sess(fused), feeds, 31)


def skip_layer_norm_pays(*, refresh: bool = False) -> bool:
    """True when onnxruntime's CPU SkipLayerNormalization beats Add + LayerNormalization here."""

    def measure() -> dict[str, object]:
        try:
            plain, fused = _time_pair()
        except Exception as e:  # no contrib kernels: never fuse
            log.info("SkipLayerNormalization could not be timed (%s): not fused", e)
            return {"pays": False}
        us = {"add_layernorm": round(plain * 1e6, 1), "skip_layernorm": round(fused * 1e6, 1)}
        log.info("SkipLayerNormalization %s here (%s)", "pays" if fused < plain * 0.95 else "does not pay", us)
        return {"pays": bool(fused < plain * 0.95), "us": us}

    found = _cached("skip_layer_norm", measure, refresh)
    return bool(found.get("pays")) if isinstance(found, dict) else bool(found)


def _cached(key: str, measure, refresh: bool, keep=lambda value: True):  # type: ignore[no-untyped-def]
    """``measure()`` once per CPU and onnxruntime version, kept in the choices cache file unless
    ``keep(value)`` is false (a probe that crashed is tried again next time)."""
    path = cache_dir() / f"ort-choices-{machine_key()}.json"
    data: dict[str, object] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    if key in data and not refresh:
        return data[key]
    value = measure()
    if not keep(value):
        return value
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot cache onnxruntime choices at %s: %s", path, e)
    return data[key]


def _ort_layout(convs: list[tuple[str, np.ndarray, int]], in_channels: int) -> dict[str, np.ndarray]:
    """The filters onnxruntime's own NCHWc transformer writes for ``convs`` (name, weight,
    group), all reading one ``[1, in_channels, 8, 8]`` input, keyed by conv name."""
    nodes, inits, outs = [], [], []
    src = "x"
    for name, w, group in convs:
        k = w.shape[2]
        nodes.append(helper.make_node("Conv", [src, f"{name}_w"], [name], name=name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group))
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        src = name
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 8, 8])], outs[-1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        saved_path = os.path.join(tmp, "probe.onnx")
        open_session(model.SerializeToString(), session_options(optimization="all", optimized_model_path=saved_path))
        saved = onnx.load(saved_path)
    weights = {t.name: numpy_helper.to_array(t) for t in saved.graph.initializer}
    # onnxruntime names the reordered filters itself; its Convs keep the chain's order.
    ordered = [weights[n.input[1]] for n in saved.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"]
    return {name: w for (name, _, _), w in zip(convs, ordered)} if len(ordered) == len(convs) else {}


@dataclass(frozen=True)
class NchwcProbe:
    """What the NCHWc probe found. ``status``: ``"ok"`` (``block`` is onnxruntime's channel
    block here), ``"no-kernels"`` (this CPU really has none), ``"layout-differs"`` (onnxruntime
    lays filters out otherwise than :mod:`onnxforge.kernels.nchwc`) or ``"error"`` (the probe
    itself crashed; ``detail`` says how). ``block`` is 0 unless the status is ``"ok"``."""

    block: int
    status: str
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"block": self.block, "status": self.status, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> NchwcProbe:
        block = data.get("block", 0)
        return cls(block if isinstance(block, int) else 0, str(data.get("status", "error")), str(data.get("detail", "")))


def _probe_nchwc_status() -> NchwcProbe:
    def filt(*shape: int) -> np.ndarray:
        return (np.arange(int(np.prod(shape))) + 1).astype(np.float32).reshape(shape)

    try:
        first = _ort_layout([("a", filt(1, 3, 3, 3), 1)], 3)
        if "a" not in first:
            return NchwcProbe(0, "no-kernels", "onnxruntime's optimizer wrote no NCHWc Conv")
        block = int(first["a"].shape[0])
        c = 2 * block
        convs = [("nchw_input", filt(c, 3, 3, 3), 1), ("depthwise", filt(c, 1, 3, 3), c), ("blocked", filt(c + 1, c, 1, 1), 1)]
        got = _ort_layout(convs, 3)
        ours = {
            "nchw_input": reorder_filter_oihwbo(convs[0][1], block),
            "depthwise": reorder_filter_oihwbo(convs[1][1], block),
            "blocked": reorder_filter_oihwbibo(convs[2][1], block),
        }
    except Exception as e:  # no CPU provider, a changed onnxruntime API, a bug in the probe
        detail = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        log.warning("NCHWc probe crashed (%s): no NCHWc lowering", detail)
        return NchwcProbe(0, "error", detail)
    for name, w in ours.items():
        if name not in got or got[name].shape != w.shape or not np.array_equal(got[name], w):
            log.warning("onnxruntime's NCHWc %s filter layout differs from onnxforge's: no NCHWc lowering", name)
            return NchwcProbe(0, "layout-differs", f"the {name} filter layout differs (block {block})")
    return NchwcProbe(block, "ok")


def _probe_nchwc() -> int:
    return _probe_nchwc_status().block


#: Metadata key that ``lower-nchwc`` writes: the channel block the model's NCHWc ops assume.
NCHWC_METADATA_KEY = "onnxforge.nchwc_block_size"


def check_nchwc_block(metadata: Mapping[str, str]) -> None:
    """Raise :class:`~onnxforge.errors.ModelError` when a model lowered by ``lower-nchwc``
    (``--target cpu-native``) is about to run where onnxruntime's NCHWc block differs: the
    filters would be read in the wrong order and the outputs would be wrong without any error.
    ``metadata`` is the model's metadata, e.g. ``session.get_modelmeta().custom_metadata_map``.
    Models without the key pass."""
    want = metadata.get(NCHWC_METADATA_KEY)
    if want is None:
        return
    here = nchwc_block_size()
    if str(here) != str(want).strip():
        found = f"a block of {here}" if here else "no NCHWc kernels"
        raise ModelError(
            f"this model was lowered to onnxruntime's NCHWc layout for a channel block of {want} "
            f"(--target cpu-native) but onnxruntime on this CPU has {found}, so it would compute wrong "
            "results here; compile the original with --target cpu-native on this machine, or use --target cpu"
        )


def nchwc_probe(*, refresh: bool = False) -> NchwcProbe:
    """onnxruntime's NCHWc channel block on this machine and why it is 0 when it is. Found once
    by letting onnxruntime's own transformer rewrite a probe model (about 0.1 s), then cached per
    CPU and onnxruntime version; a probe that crashed is not cached."""
    def measure() -> dict[str, object]:
        return _probe_nchwc_status().to_json()

    def keep(value: dict[str, object]) -> bool:
        return value.get("status") != "error"

    found = _cached("nchwc", measure, refresh, keep)
    if not isinstance(found, dict) or "status" not in found:  # a damaged cache entry
        found = _cached("nchwc", measure, True, keep)
    return NchwcProbe.from_json(found)


def nchwc_block_size(*, refresh: bool = False) -> int:
    """onnxruntime's NCHWc channel block on this machine (MLAS: 8 with AVX2, 16 with AVX-512),
    or 0 where its CPU provider has no NCHWc kernels, lays filters out differently from
    :mod:`onnxforge.kernels.nchwc`, or the probe crashed (:func:`nchwc_probe` says which)."""
    return nchwc_probe(refresh=refresh).block
