"""``onnxforge pack``: an ONNX model as an ``.onnxz`` archive with entropy-coded tensors
(docs/COMPRESSION.md); ``onnxforge.load``, ``analyze``, ``compile`` and ``bench`` read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxforge import modelio
from onnxforge.commands.common import add_verbosity
from onnxforge.ir import archive
from onnxforge.ir.tensor_data import TensorStore

NAME = "pack"
HELP = "write a model as an .onnxz archive (entropy-coded tensors; unpack restores it)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="input .onnx file (or .onnxz)")
    p.add_argument("-o", "--output", required=True, help="output archive, conventionally MODEL.onnxz (written atomically)")
    add_verbosity(p)


def run(args: argparse.Namespace) -> int:
    src, out = Path(args.model), Path(args.output)
    inputs = modelio.input_files(src, keep=True)  # no output may replace a file the input reads
    modelio.check_output_path(out, src, inputs=inputs, external_data=False)
    proto = modelio.read_proto(src)
    modelio.load(proto if len(inputs) == 1 else src)  # the usual validation
    data = archive.pack(proto, TensorStore(src.parent))
    modelio.write_file_atomic(out, data, inputs=inputs, label="output")
    if not args.quiet:
        size = sum(f.stat().st_size for f in inputs)
        print(f"wrote {out}: {len(data)} bytes ({size / max(len(data), 1):.2f}x smaller than the {size} bytes of {src.name})")
    return 0
