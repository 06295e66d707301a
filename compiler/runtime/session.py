"""Sessions for a target: what every part of onnxforge uses to run a model.

:func:`create_session` opens an onnxruntime session on a :class:`~onnxforge.runtime.target.Target`'s
providers (CPU by default) and applies the guards: a ``--target cpu-native`` model lowered for
another CPU's NCHWc block would run and compute garbage, so it is refused with a one-line error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import onnxruntime as ort

from onnxforge.ir import archive
from onnxforge.runtime.availability import check_session
from onnxforge.runtime.choices import check_nchwc_block
from onnxforge.runtime.machine import cache_dir
from onnxforge.runtime.options import deployment_options, open_session, session_options
from onnxforge.runtime.target import TARGETS, TENSORRT_EP, Target

ModelSource = bytes | str | os.PathLike[str] | onnx.ModelProto


def _path_or_archive(path: str | os.PathLike[str]) -> bytes | str:
    """The path onnxruntime opens, or for an ``.onnxz`` archive (which it cannot read) the
    serialized model inside it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(archive.MAGIC))
    except OSError:
        return os.fspath(path)  # onnxruntime reports the missing file
    if not archive.is_archive(head):
        return os.fspath(path)
    with open(path, "rb") as f:
        return archive.unpack(f.read()).SerializeToString()


def create_session(
    model: ModelSource,
    target: Target | None = None,
    *,
    options: ort.SessionOptions | None = None,
    guard: bool = True,
    **option_kwargs: Any,
) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``model`` (serialized bytes, a path or a ModelProto) on
    ``target``'s providers with its provider options (default: CPU). ``options``, or the
    keywords of :func:`~onnxforge.runtime.options.session_options`, set the session options.
    With ``guard`` a cpu-native model lowered for another CPU is refused
    (:class:`~onnxforge.errors.ModelError`)."""
    target = target or TARGETS["cpu"]
    if options is None:
        options = session_options(**option_kwargs)
    elif option_kwargs:
        raise TypeError("pass either options or session_options keywords, not both")
    if isinstance(model, onnx.ModelProto):
        data: bytes | str = model.SerializeToString()
    elif isinstance(model, bytes):
        data = model
    else:
        data = _path_or_archive(model)
    sess = open_session(data, options, target.provider_list())
    if guard:
        check_nchwc_block(sess.get_modelmeta().custom_metadata_map)
    return sess


def deployment_providers(target: Target) -> list[tuple[str, dict[str, str]]]:
    """``target``'s providers and options as a deployment session gets them: TensorRT's engine
    and timing caches, when on without a folder, go to ``$ONNXFORGE_CACHE/tensorrt`` (not the
    current folder, where onnxruntime would put them)."""
    providers = target.provider_list()
    for name, opts in providers:
        if name != TENSORRT_EP:
            continue
        for flag, path in (("trt_engine_cache_enable", "trt_engine_cache_path"), ("trt_timing_cache_enable", "trt_timing_cache_path")):
            if opts.get(flag, "").lower() in ("true", "1") and not opts.get(path):
                folder = cache_dir() / "tensorrt"
                folder.mkdir(parents=True, exist_ok=True)
                opts[path] = str(folder)
    return providers


def deployment_session(
    model: ModelSource,
    target: Target,
    *,
    strict: bool = True,
    guard: bool = True,
    config_entries: Mapping[str, str] | None = None,
    **extra: Any,
) -> ort.InferenceSession:
    """A session that runs ``model`` as ``target`` deploys it: its providers and provider
    options, its :class:`~onnxforge.runtime.target.SessionConfig` (threads, optimization level,
    execution mode) and its session config entries (EPContext export), plus ``config_entries``
    and ``extra`` keywords of :func:`~onnxforge.runtime.options.session_options`. Check that
    the target can run here first (:func:`onnxforge.runtime.availability.resolve`); afterwards
    a provider that onnxruntime dropped is an error with ``strict``, else a warning."""
    entries = {**target.session_config_entries(), **dict(config_entries or {})}
    options = deployment_options(target.session, config_entries=entries, **extra)
    if isinstance(model, onnx.ModelProto):
        data: bytes | str = model.SerializeToString()
    elif isinstance(model, bytes):
        data = model
    else:
        data = _path_or_archive(model)
    sess = open_session(data, options, deployment_providers(target))
    check_session(target, sess.get_providers(), strict=strict)
    if guard:
        check_nchwc_block(sess.get_modelmeta().custom_metadata_map)
    return sess


def run_session(
    sess: ort.InferenceSession,
    feeds: Mapping[str, Any],
    outputs: Sequence[str] | None = None,
    *,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Run ``sess`` and return its outputs by name. With ``seconds`` onnxruntime is told to stop
    after that long (it then raises): a valid model can loop for hours, e.g. a Loop whose trip
    count is 2**63 - 1, growing memory at every iteration."""
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    if seconds is None:
        return dict(zip(names, sess.run(names, dict(feeds))))
    run_options = ort.RunOptions()
    timer = threading.Timer(seconds, setattr, (run_options, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        return dict(zip(names, sess.run(names, dict(feeds), run_options)))
    finally:
        timer.cancel()
