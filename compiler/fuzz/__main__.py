"""``python -m onnxforge.fuzz``: see :mod:`onnxforge.fuzz.cli`."""

import sys

from onnxforge.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main())
