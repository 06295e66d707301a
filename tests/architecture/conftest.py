import sys
from pathlib import Path

# Make tests/architecture/importgraph.py importable as `importgraph` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
