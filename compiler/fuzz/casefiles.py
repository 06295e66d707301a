"""The files of a case: the model and its external data by name, links and folders among a
mutant's files, writing them into a folder and fingerprinting a folder (to see whether a
run changed its input)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "model.onnx"
DATA = "weights.bin"


@dataclass(frozen=True)
class Symlink:
    """A file of a mutant that is a symbolic link to ``target``."""

    target: str


@dataclass(frozen=True)
class Folder:
    """A "file" of a mutant that is an empty folder."""


def _digest_folder(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.name.startswith(".fuzz-"):
            continue
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _write_files(folder: Path, files: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = folder / name
        if isinstance(content, Symlink):
            os.symlink(content.target, p)
        elif isinstance(content, Folder):
            p.mkdir()
        else:
            p.write_bytes(content)
