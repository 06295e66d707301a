import sys
from pathlib import Path

# Make tests/calibration/calib_models.py importable as `calib_models` under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
