"""``onnxforge unpack``: the ONNX model inside an ``.onnxz`` archive, written as ``.onnx``."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxforge import modelio
from onnxforge.commands.common import add_verbosity
from onnxforge.errors import UsageError
from onnxforge.ir import archive

NAME = "unpack"
HELP = "write the model inside an .onnxz archive as .onnx"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="input .onnxz archive")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    add_verbosity(p)


def run(args: argparse.Namespace) -> int:
    src, out = Path(args.archive), Path(args.output)
    inputs = modelio.input_files(src, keep=True)
    try:
        with open(src, "rb") as f:
            head = f.read(len(archive.MAGIC))
    except OSError as e:
        raise UsageError(f"cannot read {src}: {e.strerror or e}") from None
    if not archive.is_archive(head):
        raise UsageError(f"{src} is not an .onnxz archive (it reads as a plain model; nothing to unpack)")
    proto = modelio.read_proto(src)  # unpacked and checked
    modelio.load(proto)
    if proto.ByteSize() < modelio.EMBED_LIMIT:
        modelio.check_output_path(out, src, inputs=inputs, external_data=False)
        modelio.write_file_atomic(out, proto.SerializeToString(), inputs=inputs, label="output")
    else:  # too large for one protobuf: weights go to OUTPUT.data
        modelio.save(proto, out, source=src, external_data=True)
    if not args.quiet:
        print(f"wrote {out}")
    return 0
