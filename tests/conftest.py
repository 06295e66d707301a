import sys
from pathlib import Path

# Make tests/builders.py importable as `builders` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
