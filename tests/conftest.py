import sys
from pathlib import Path

# Make tests/builders.py importable as `builders` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))

# The cost model caches its measured CPU profile; keep the tests' copy out of the user's home.
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("ONNXFORGE_CACHE", str(Path(tempfile.gettempdir()) / "onnxforge-test-cache"))
