"""The runtime layer: onnxruntime sessions, targets and measurements on this machine.

* :mod:`~onnxforge.runtime.target`: :class:`Target` (providers, provider options and the
  compile-time choices of each target) and the table of named targets.
* :mod:`~onnxforge.runtime.session`: :func:`create_session`, what every other layer uses.
* :mod:`~onnxforge.runtime.options`: session options and the one ``InferenceSession`` call.
* :mod:`~onnxforge.runtime.choices`: choices measured once per machine (SkipLayerNormalization
  pays? onnxruntime's NCHWc block) and the cpu-native guard.
* :mod:`~onnxforge.runtime.machine`: the measurement cache and this machine's key.
* :mod:`~onnxforge.runtime.availability`: can this machine run a target (providers, GPU)?
* :mod:`~onnxforge.runtime.placement`: which provider took each node, from onnxruntime.
* :mod:`~onnxforge.runtime.bench`: latency, throughput, memory and session-creation time;
  interleaved comparisons (``onnxforge bench``, ``benchmarks/``).
* :mod:`~onnxforge.runtime.tune`: the session-options search (``onnxforge tune``).
* :mod:`~onnxforge.runtime.emit`: onnxruntime-optimized ``.onnx``, ``.ort`` and EPContext models.
"""

from onnxforge.runtime.session import create_session, deployment_session, run_session
from onnxforge.runtime.target import TARGETS, SessionConfig, Target, get_target

__all__ = ["TARGETS", "SessionConfig", "Target", "create_session", "deployment_session", "get_target", "run_session"]
