"""``make demo``: compile the embedded example models and show what changed.

Builds a small CNN with BatchNorm and a BERT-style transformer block (both spelled out the way
exporters write them) with :mod:`onnxforge.models`, runs the lossless pipeline with verification
and prints the before/after summary of each.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import onnx

from onnxforge.api import compile as compile_model
from onnxforge.models.cnn import small_cnn, transformer_block


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="onnxforge-demo-") as tmp:
        for name, (model, _feeds) in (("small CNN", small_cnn()), ("transformer block", transformer_block())):
            src = Path(tmp) / f"{name.replace(' ', '_')}.onnx"
            onnx.save(model, src)
            result = compile_model(src, "lossless", verify=True)
            out = result.save(Path(tmp) / f"{src.stem}.opt.onnx")
            print(f"=== {name}: {src.name} -> {out.name}")
            print(result.report.summary())
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
