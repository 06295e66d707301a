"""Static int8 quantization as a pass: :class:`QuantizeInt8`.

The pass calibrates on the data in its options, inserts Q/DQ for the target's placement rules
(:mod:`~onnxforge.passes.compression.int8.policy`, :mod:`~onnxforge.passes.compression.int8.qdq`),
measures every layer and output on held-out data, keeps the layers the outputs are most
sensitive to in float until the accuracy budget holds (the shared
:func:`~onnxforge.calibration.budget.back_off` loop) and while int8 would be slower here; see
:mod:`~onnxforge.passes.compression.int8.flow`. It is a functional pass: it returns the
quantized model and leaves its input alone. Its report is ``ctx.records["int8"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxforge.calibration.data import model_inputs, open_calibration
from onnxforge.calibration.ranges import METHODS
from onnxforge.errors import UsageError
from onnxforge.ir import Model
from onnxforge.passes.compression.int8.flow import LabelledData, QuantizationReport, quantize_static
from onnxforge.passes.compression.int8.policy import POLICIES
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

#: Key of ``PassContext.records`` holding the :class:`QuantizationReport`.
REPORT_KEY = "int8"


@dataclass(frozen=True)
class Int8Options(PassOptions):
    """Settings of static int8 quantization (the ``int8`` pipeline; ``QuantizationOptions`` in
    :mod:`onnxforge.api` is this class).

    ``calibration``: a ``.npz`` (arrays keyed by input name, samples along axis 0), a folder of
    ``.npz`` files, an onnxruntime ``CalibrationDataReader``, a list of feed dicts (input name
    -> array, one batch each), a :class:`~onnxforge.calibration.data.CalibrationSource`, or
    ``"synthetic"`` to calibrate on seeded random data (explicitly only; the report says so).
    ``method``: minmax, percentile, entropy or mse. ``exclude``: node names kept in float.
    ``min_sqnr`` (dB, every output) and ``max_accuracy_drop`` (points, with ``eval_data``: a
    ``.npz`` of inputs plus ``labels``) keep the most harmful layers in float until the budget
    holds; ``min_cosine`` (default 0.99, None to disable) does the same for every output's
    cosine similarity to the float model. The budget is measured on ``eval_inputs`` (model
    inputs, in any form ``calibration`` takes; a ``labels`` array is ignored) when given, else
    on every fifth calibration sample from the second, held out of calibration; accuracy on the
    ``eval_data`` rows that were not calibrated on. At most ``max_fallback`` layers go back to
    float for accuracy; when the budget still does not hold the compile fails
    (:class:`~onnxforge.errors.BudgetError`) unless ``allow_budget_miss``, which returns that
    model and says by how much it misses. ``activation_products``: also quantize MatMuls of two
    activations (attention scores and context; little speed, real accuracy cost).
    ``speed_guard``: time fp32 and int8 on this machine and keep layers in float while int8 is
    not faster. ``smooth_alpha``: SmoothQuant migration strength for MatMul inputs (None: off).
    ``min_macs``: smaller layers stay float (int8 does not pay for them). ``padding_mask``: the
    input that marks padding (``"auto"``: an ``attention_mask`` input; None: off); errors of
    ``[batch, sequence, ...]`` tensors are then measured on real positions only. ``policy``: the
    Q/DQ placement rules (``cpu`` or ``tensorrt``; the pipeline takes the target's). ``dims``:
    sizes of symbolic dims for synthetic data. ``progress``: a progress callback (the CLI's bar).
    """

    calibration: Any = None
    method: str = "minmax"
    per_channel: bool = True
    exclude: Sequence[str] = ()
    min_sqnr: float | None = None
    min_cosine: float | None = 0.99
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    eval_inputs: Any = None
    allow_budget_miss: bool = False
    max_fallback: int = 32
    activation_products: bool = False
    speed_guard: bool = True
    smooth_alpha: float | None = 0.7
    padding_mask: str | None = "auto"
    min_macs: int = 16384
    policy: str = "cpu"
    dims: Mapping[str, int] | None = None
    progress: Any = field(default=None, compare=False)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.max_fallback < 0 or self.min_macs < 0:
            raise ValueError("max_fallback and min_macs must be >= 0")

    def with_policy(self, policy: str) -> Int8Options:
        return dataclasses.replace(self, policy=policy)


class QuantizeInt8(Pass[Int8Options]):
    """Static int8 QDQ quantization calibrated on real data, within an accuracy budget."""

    name = "quantize-int8"
    summary = "Static int8 Q/DQ calibrated on --calibration data, kept within the accuracy budget on held-out data."
    lossless = False
    in_place = False
    Options = Int8Options

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        inputs = model_inputs(model)
        synthetic = isinstance(opts.calibration, str) and opts.calibration == "synthetic"
        source = open_calibration(
            None if synthetic else opts.calibration, inputs=inputs, allow_synthetic=synthetic, dims=opts.dims
        )
        eval_source = None
        if opts.eval_inputs is not None:
            eval_source = open_calibration(opts.eval_inputs, inputs=inputs, dims=opts.dims)
        labelled = _labelled(opts)
        quantized, report = quantize_static(
            model,
            source,
            method=opts.method,
            target=opts.policy,
            per_channel=opts.per_channel,
            exclude=opts.exclude,
            min_macs=opts.min_macs,
            min_sqnr=opts.min_sqnr,
            min_cosine=opts.min_cosine,
            max_accuracy_drop=opts.max_accuracy_drop,
            activation_products=opts.activation_products,
            speed_guard=opts.speed_guard,
            smooth_alpha=opts.smooth_alpha,
            padding_mask=opts.padding_mask,
            eval_data=labelled,
            eval_source=eval_source,
            allow_budget_miss=opts.allow_budget_miss,
            max_fallback=opts.max_fallback,
            progress=opts.progress,
        )
        ctx.records[REPORT_KEY] = report
        stats = {
            "quantized": len(report.quantized),
            "weight_only": len(report.weight_only),
            "kept_float": len(report.kept_float),
            "kept_for_speed": len(report.kept_for_speed),
        }
        return PassResult(True, stats, model=quantized)


def _labelled(opts: Int8Options) -> LabelledData | None:
    if opts.eval_data is None:
        if opts.max_accuracy_drop is not None:
            raise UsageError(
                "--max-accuracy-drop needs labelled evaluation data (--eval-data); use --min-sqnr without labels"
            )
        return None
    try:
        with np.load(opts.eval_data) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read evaluation data {opts.eval_data}: {e}") from None
    labels = arrays.pop("labels", None)
    if labels is None:
        raise UsageError(f"evaluation data {opts.eval_data} has no 'labels' array")
    return LabelledData(arrays, labels)


__all__ = ["REPORT_KEY", "Int8Options", "QuantizationReport", "QuantizeInt8"]
