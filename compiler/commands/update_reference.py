"""Rewrite the generated reference block of a guide: ``python -m
onnxforge.commands.update_reference docs/USER_GUIDE.md`` (see :mod:`onnxforge.commands.reference`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from onnxforge.commands.reference import update


def main(argv: Sequence[str]) -> int:
    for arg in argv:
        print(f"{arg}: {'updated' if update(Path(arg)) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
