"""onnx's shape inference, run where a crash in it cannot take onnxforge down.

onnx's C++ inference aborts the whole process on some invalid models instead of raising: the
released wheels are built with ``_GLIBCXX_ASSERTIONS``, and Slice's inference calls
``std::clamp(start, 0, dim)`` on a dimension that can be negative -- a declared ``dim_value``
of -7 (the checker accepts it), or a Pad with negative pads that remove more than the axis
has. onnxruntime runs the same inference, in-process, when it opens a session. The bad-input
fuzzer (``python -m onnxforge.fuzz``) found both as SIGABRT in ``analyze`` and ``compile``.

So inference runs in a helper process, forked once (per process that uses it) and fed models
through a pipe: :func:`infer_shapes` is ``onnx.shape_inference.infer_shapes`` whose result
comes back serialized, an exception as the same exception, and a helper killed by a signal as
an :class:`onnx.shape_inference.InferenceError` that callers already handle as "onnx rejects
the model" (the next call forks a new helper). :func:`inference_crash` says whether a model
would kill the process that runs inference on it, before onnxruntime is given it. A request
costs a pipe round trip (well under a millisecond for small models), not a fork. Where
``os.fork`` does not exist both run in-process, unguarded.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import signal
import struct
import threading
from typing import Any

import onnx
from onnx import helper

#: How the message of the InferenceError raised for a crash starts.
CRASHED = "onnx shape inference crashed"
#: Exceptions the helper may report, rebuilt by name here (anything else: RuntimeError).
_ERRORS: dict[str, type[BaseException]] = {
    "InferenceError": onnx.shape_inference.InferenceError,
    "ValidationError": onnx.checker.ValidationError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "RuntimeError": RuntimeError,
    "MemoryError": MemoryError,
    "RecursionError": RecursionError,
}
_FRAME = struct.Struct("<cQ")  # kind, payload length


def infer_shapes(model: onnx.ModelProto, **kwargs: Any) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model, **kwargs)``, but a crash of onnx raises
    :class:`onnx.shape_inference.InferenceError` instead of killing this process."""
    if not hasattr(os, "fork"):
        return onnx.shape_inference.infer_shapes(model, **kwargs)
    options = json.dumps(kwargs).encode()
    kind, payload, crash = _request(b"I", struct.pack("<Q", len(options)) + options + model.SerializeToString())
    if crash is not None:
        raise onnx.shape_inference.InferenceError(f"{CRASHED} ({crash}) on this model")
    if kind == b"E":
        name, message = json.loads(payload)
        raise _ERRORS.get(name, RuntimeError)(message)
    result = onnx.ModelProto()
    result.ParseFromString(payload)
    return result


def inference_crash(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> str | None:
    """How onnx's shape inference dies on ``model`` (``"killed by SIGABRT"``), or None when it
    survives (raising is surviving: that error is the caller's to report). ``model``: a proto,
    serialized bytes or a path (external data is not read)."""
    if not hasattr(os, "fork"):
        return None
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
    elif isinstance(model, bytes):
        data = model
    else:
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError:
            return None  # onnxruntime will say that it cannot read the file
    return _request(b"C", data)[2]


# --- the helper process ----------------------------------------------------------------------


class _Helper:
    def __init__(self) -> None:
        _warm_up()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(req_w)
                os.close(rep_r)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)  # onnx's assertion message: the caller says what happened
                faulthandler.disable()  # and no Python traceback dump of an expected crash
                _serve(req_r, rep_w)
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(rep_w)
        self.owner, self.pid, self.requests, self.replies = os.getpid(), pid, req_w, rep_r

    def close(self) -> str:
        """Close the pipes and reap the helper; how it ended."""
        for fd in (self.requests, self.replies):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "exited"
        return f"killed by {_signal_name(os.WTERMSIG(status))}" if os.WIFSIGNALED(status) else "exited"


_helper: _Helper | None = None
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A forked child neither shares its parent's helper nor inherits its lock held."""
    global _helper, _lock
    _helper, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _request(kind: bytes, payload: bytes) -> tuple[bytes, bytes, str | None]:
    """Send one request; (reply kind, reply payload, None), or (b"", b"", how the helper died)."""
    global _helper
    with _lock:
        if _helper is None or _helper.owner != os.getpid():  # a forked process gets its own
            _helper = _Helper()
        h = _helper
        try:
            _write_all(h.requests, _FRAME.pack(kind, len(payload)) + payload)
            reply = _read_frame(h.replies)
        except OSError:
            reply = None
        if reply is None:
            _helper = None
            return b"", b"", h.close()
        return reply[0], reply[1], None


def _serve(requests: int, replies: int) -> None:
    while True:
        frame = _read_frame(requests)
        if frame is None:
            return
        kind, payload = frame
        if kind == b"C":
            try:
                proto = onnx.ModelProto()
                proto.ParseFromString(payload)
                onnx.shape_inference.infer_shapes(proto)
            except BaseException:  # noqa: BLE001, S110 - an error is not a crash
                pass
            _write_all(replies, _FRAME.pack(b"K", 0))
            continue
        (n,) = struct.unpack_from("<Q", payload)
        options = json.loads(payload[8 : 8 + n])
        try:
            proto = onnx.ModelProto()
            proto.ParseFromString(payload[8 + n :])
            out, body = b"K", onnx.shape_inference.infer_shapes(proto, **options).SerializeToString()
        except BaseException as e:  # noqa: BLE001 - every error goes back
            out, body = b"E", json.dumps([type(e).__name__, str(e)]).encode()
        _write_all(replies, _FRAME.pack(out, len(body)) + body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> tuple[bytes, bytes] | None:
    header = _read_exact(fd, _FRAME.size)
    if header is None:
        return None
    kind, n = _FRAME.unpack(header)
    body = _read_exact(fd, n)
    return None if body is None else (kind, body)


@functools.cache
def _warm_up() -> None:
    """Build onnx's operator schema registry before forking, not in every helper."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "warm", [x], [])
    onnx.shape_inference.infer_shapes(helper.make_model(graph))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
