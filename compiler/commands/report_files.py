"""``compile --report FILE``: a ``.json`` path gets the JSON report; a ``.html`` (or ``.htm``)
path gets the standalone HTML page (:mod:`onnxforge.reporting`) and, beside it under the same
name with ``.json``, the page's numbers as JSON. Every file is checked before the compilation
and written atomically like the model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from onnxforge import modelio
from onnxforge.commands.common import write_json_atomic
from onnxforge.report import Report
from onnxforge.reporting.data import report_data
from onnxforge.reporting.page import render_page

_HTML = (".html", ".htm")


def is_html(path: Path) -> bool:
    return path.suffix.lower() in _HTML


def data_path(path: Path) -> Path:
    """Where the numbers of the HTML report ``path`` go: ``report.html`` -> ``report.json``."""
    return path.with_suffix(".json")


def check_report_paths(report: Path | None, inputs: tuple[Path, ...], output: Path) -> None:
    """Refuse, before any work, an HTML report whose JSON sibling would replace an input file,
    the output model or the page itself (the report path itself is checked with the model's)."""
    if report is None or not is_html(report):
        return
    taken = {modelio.output_target(output): "output model", modelio.output_target(report): "HTML report"}
    modelio.check_output_path(data_path(report), inputs=inputs, external_data=False, label="report data", taken=taken)


def write_report(report_path: Path, report: Report, inputs: tuple[Path, ...], output: Path, model: Path) -> list[Path]:
    """Write the report(s) for ``report_path``'s suffix; returns the paths written."""
    taken = {modelio.output_target(output): "output model"}
    if not is_html(report_path):
        write_json_atomic(report_path, report.to_dict(), inputs, taken=taken)
        return [report_path]
    data = report_data(report, model=model.name, output=output.name)
    sibling = data_path(report_path)
    text = json.dumps(_plain(data), indent=1, allow_nan=False) + "\n"
    modelio.write_file_atomic(sibling, text.encode(), inputs=inputs, label="report data", taken=taken)
    taken[modelio.output_target(sibling)] = "report data"
    modelio.write_file_atomic(report_path, render_page(data).encode(), inputs=inputs, label="report", taken=taken)
    return [report_path, sibling]


def _plain(v: Any) -> Any:
    """``v`` as strict JSON: non-finite floats as strings ("inf", "nan"), numpy scalars as
    Python numbers, tuples as lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
