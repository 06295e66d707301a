import sys
from pathlib import Path

# Make tests/runtime/lowering_models.py importable as `lowering_models` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
