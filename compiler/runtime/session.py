"""Sessions for a target: what every part of onnxforge uses to run a model.

:func:`create_session` opens an onnxruntime session on a :class:`~onnxforge.runtime.target.Target`'s
providers (CPU by default) and applies the guards: a ``--target cpu-native`` model lowered for
another CPU's NCHWc block would run and compute garbage, so it is refused with a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import onnxruntime as ort

from onnxforge.runtime.choices import check_nchwc_block
from onnxforge.runtime.options import open_session, session_options
from onnxforge.runtime.target import TARGETS, Target

ModelSource = bytes | str | os.PathLike[str] | onnx.ModelProto


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
        data = os.fspath(model)
    sess = open_session(data, options, target.provider_list())
    if guard:
        check_nchwc_block(sess.get_modelmeta().custom_metadata_map)
    return sess


def run_session(sess: ort.InferenceSession, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``sess`` and return its outputs by name."""
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))
