"""Int8 quantization support: calibration data, range collection and error measures.

* :mod:`~onnxforge.calibration.data`: where calibration samples come from (``.npz``, a folder of
  ``.npz``, an onnxruntime ``CalibrationDataReader``, or explicitly requested synthetic data).
* :mod:`~onnxforge.calibration.collect`: streaming range collection with onnxruntime.
* :mod:`~onnxforge.calibration.histogram` / :mod:`~onnxforge.calibration.ranges`: the accumulators and
  the range-selection methods (minmax, percentile, entropy, mse), scale and zero point.
* :mod:`~onnxforge.metrics.sqnr`: SQNR and cosine similarity for per-layer error reports.
* :mod:`~onnxforge.calibration.budget`: the accuracy budget, its held-out data, and the error a
  budget that cannot be met raises.
* progress: :func:`collect_ranges` and the sensitivity ranking take a ``progress(done, total)``
  callback, e.g. an :class:`onnxforge.progress.Stage`; the CLI draws it.
"""

from __future__ import annotations

from onnxforge.calibration.collect import collect_ranges, exposed_model
from onnxforge.calibration.data import (
    CalibrationSource,
    FeedReader,
    InputSpec,
    from_feeds,
    from_folder,
    from_npz,
    from_reader,
    model_inputs,
    open_calibration,
    synthetic,
    synthetic_data,
)
from onnxforge.calibration.histogram import Histogram, RunningMinMax, StreamingHistogram
from onnxforge.calibration.ranges import METHODS, TensorRange, compute_range, scale_zero_point
from onnxforge.metrics.sqnr import cosine, sqnr_db

__all__ = [
    "METHODS",
    "CalibrationSource",
    "Histogram",
    "InputSpec",
    "RunningMinMax",
    "StreamingHistogram",
    "TensorRange",
    "collect_ranges",
    "compute_range",
    "cosine",
    "exposed_model",
    "from_folder",
    "from_npz",
    "FeedReader",
    "from_feeds",
    "from_reader",
    "model_inputs",
    "open_calibration",
    "scale_zero_point",
    "sqnr_db",
    "synthetic",
    "synthetic_data",
]
