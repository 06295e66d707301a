"""The real models the benchmarks run on: the corpus (`make corpus`) and the transformers
exports (`make exports`) present on this machine, each with seeded realistic feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def real_models() -> list[tuple[str, Path, dict[str, np.ndarray]]]:
    """(name, path, feeds) of every corpus model and export present."""
    from onnxforge.models.corpus import feeds_for, list_corpus
    from onnxforge.models.exports import feeds_for_export, list_exports

    out = []
    for name, path in list_corpus().items():
        out.append((name, path, feeds_for(name, onnx.load(path, load_external_data=False), seed=0)))
    for name, path in list_exports().items():
        out.append((name, path, feeds_for_export(name, seed=0)))
    return out
