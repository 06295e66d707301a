"""The runtime layer: onnxruntime sessions, targets and measurements on this machine.

* :mod:`~onnxforge.runtime.target`: :class:`Target` (providers, provider options and the
  compile-time choices of each target) and the table of named targets.
* :mod:`~onnxforge.runtime.session`: :func:`create_session`, what every other layer uses.
* :mod:`~onnxforge.runtime.options`: session options and the one ``InferenceSession`` call.
* :mod:`~onnxforge.runtime.choices`: choices measured once per machine (SkipLayerNormalization
  pays? onnxruntime's NCHWc block) and the cpu-native guard.
* :mod:`~onnxforge.runtime.machine`: the measurement cache and this machine's key.
"""

from onnxforge.runtime.session import create_session, run_session
from onnxforge.runtime.target import TARGETS, Target, get_target

__all__ = ["TARGETS", "Target", "create_session", "get_target", "run_session"]
