import sys
from pathlib import Path

# Make tests/passes/pass_helpers.py importable as `pass_helpers` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
