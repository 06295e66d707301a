"""What onnxruntime itself writes for a target: its optimized model (``.onnx``), the same in
its own ORT format (``.ort``, for onnxruntime's minimal builds and mobile), and an EPContext
model (TensorRT's compiled engine inside or beside an ONNX model, loaded without a rebuild).

onnxruntime writes these while it makes a session (``optimized_model_filepath``, the
``ep.context_*`` entries); here it writes into a temporary folder beside the output, the result
is test-loaded, then moved into place atomically like every onnxforge output (never over a file
the input reads). At ``optimization="all"`` the CPU provider may lay convolutions out for this
CPU's SIMD width (NCHWc): such a model runs only where the width is the same, and the result
says so in ``notes``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx

from onnxforge import modelio
from onnxforge.errors import ModelError, UsageError
from onnxforge.runtime.session import ModelSource, deployment_session
from onnxforge.runtime.target import TENSORRT_EP, Target

Format = Literal["onnx", "ort"]


@dataclass
class Emitted:
    path: Path
    format: str
    bytes: int
    nodes: int | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format, "bytes": self.bytes, "nodes": self.nodes, "notes": list(self.notes)}


def _source(model: ModelSource, tmp: Path) -> str:
    """A path onnxruntime can open (a ModelProto or bytes are written to ``tmp``)."""
    if isinstance(model, onnx.ModelProto):
        p = tmp / "input.onnx"
        p.write_bytes(model.SerializeToString())
        return str(p)
    if isinstance(model, bytes):
        p = tmp / "input.onnx"
        p.write_bytes(model)
        return str(p)
    return os.fspath(model)


def _nchwc(proto: onnx.ModelProto) -> bool:
    return any(n.domain == "com.microsoft.nchwc" for n in proto.graph.node)


def optimized_model(
    model: ModelSource,
    target: Target,
    out: str | os.PathLike[str],
    *,
    format: Format = "onnx",
    inputs: Sequence[Path] = (),
) -> Emitted:
    """Write onnxruntime's optimized ``model`` for ``target`` (its session options' level) to
    ``out`` as ONNX or ORT format. ``inputs``: the files the input reads (never overwritten)."""
    out_path = Path(out)
    folder = out_path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix=".onnxforge-emit-", dir=folder) as tmp_name:
        tmp = Path(tmp_name)
        written = tmp / f"optimized.{format}"
        entries = {"session.save_model_format": "ORT"} if format == "ort" else {}
        deployment_session(_source(model, tmp), target, config_entries=entries, optimized_model_path=written)
        if not written.is_file():
            raise ModelError(f"onnxruntime wrote no optimized model for --target {target.name}")
        notes = []
        nodes = None
        if format == "onnx":
            proto = onnx.load(str(written), load_external_data=False)
            nodes = len(proto.graph.node)
            if _nchwc(proto):
                notes.append("holds onnxruntime's NCHWc layout for this CPU's SIMD width: runs only on CPUs with the same width")
        # Test-load what was written, on the same providers, without optimizing it again.
        try:
            deployment_session(str(written), target.with_session(optimization="disable"), guard=False)
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load the {format} model it wrote: {' '.join(str(e).split())[:300]}") from None
        data = written.read_bytes()
        modelio.write_file_atomic(out_path, data, inputs=inputs, label=f"{format} model")
    return Emitted(out_path, format, len(data), nodes, notes)


def ep_context_model(
    model: ModelSource,
    target: Target,
    out: str | os.PathLike[str],
    *,
    embed: bool = False,
    inputs: Sequence[Path] = (),
) -> Emitted:
    """Build ``target``'s TensorRT engines for ``model`` and write the EPContext model to
    ``out`` (``embed``: the engine inside it; else an engine file beside it, which is moved
    along). Needs the TensorRT provider (check availability first)."""
    if TENSORRT_EP not in target.providers:
        raise UsageError(f"an EPContext model needs TensorRT (--target tensorrt); --target {target.name} compiles no engine")
    out_path = Path(out)
    folder = out_path.resolve().parent
    with tempfile.TemporaryDirectory(prefix=".onnxforge-epctx-", dir=folder) as tmp_name:
        tmp = Path(tmp_name)
        written = tmp / out_path.name
        deployment_session(_source(model, tmp), target.with_tensorrt(ep_context=written, ep_context_embed=embed))
        if not written.is_file():
            raise ModelError("onnxruntime wrote no EPContext model (does this onnxruntime's TensorRT provider support it?)")
        for extra in tmp.iterdir():  # engine files beside the model
            if extra != written and extra.suffix in (".engine", ".trt") and not (folder / extra.name).exists():
                shutil.move(str(extra), folder / extra.name)
        data = written.read_bytes()
        modelio.write_file_atomic(out_path, data, inputs=inputs, label="EPContext model")
        proto = onnx.load_from_string(data)
    return Emitted(out_path, "ep-context", len(data), len(proto.graph.node), [f"{sum(n.op_type == 'EPContext' for n in proto.graph.node)} EPContext node(s)"])
