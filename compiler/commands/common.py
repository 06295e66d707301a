"""What the commands share: verbosity flags, input-shape and dim specs, cost profiles, and
the checked atomic writer for reports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxforge import modelio
from onnxforge.analysis.shapes import parse_dim_spec, parse_shape_spec
from onnxforge.cost.roofline import PROFILES
from onnxforge.errors import UsageError


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug); tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")


def parse_dims(items: Sequence[str]) -> dict[str, int]:
    return dict(parse_dim_spec(item) for item in items)


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    return dict(parse_shape_spec(item) for item in items)


def check_profile(name: str) -> None:
    if name not in PROFILES:
        raise UsageError(f"unknown cost profile {name!r} (choose from {', '.join(PROFILES)})")


def write_json_atomic(
    path: Path, data: dict[str, Any], inputs: Sequence[Path] = (), taken: dict[Path, str] | None = None
) -> None:
    """Write the report like a model: atomically, through a symlink, with the usual new-file
    mode, never over one of ``inputs`` (the input's files) or ``taken`` (other outputs)."""
    text = json.dumps(data, indent=2) + "\n"
    modelio.write_file_atomic(path, text.encode(), inputs=inputs, label="report", taken=taken)


