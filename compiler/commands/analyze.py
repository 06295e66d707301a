"""``onnxforge analyze``: the cost model's figures for a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxforge import modelio
from onnxforge.commands.common import add_verbosity, check_profile, parse_dims, parse_shapes
from onnxforge.commands.progress_view import ProgressView, progress_wanted
from onnxforge.cost import analyze
from onnxforge.cost.render import render
from onnxforge.cost.roofline import cpu_profile
from onnxforge.errors import UsageError
from onnxforge.progress import reporting

NAME = "analyze"
HELP = "estimate MACs, FLOPs, parameters, memory and latency"


def add_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("model", help="input .onnx file")
    a.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="INPUT=1x3x224x224",
        help="fix an input's shape (repeatable); other open dims take the size the model implies, a batch 1, "
        "else the size-dependent figures are refused",
    )
    a.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N", help="fix a symbolic dim by name (repeatable)")
    a.add_argument("--target", default="cpu", metavar="PROFILE", help="latency profile: cpu (measured here, cached), h100, a100")
    a.add_argument("--json", action="store_true", help="print the full analysis as JSON")
    a.add_argument("--top", type=int, default=10, metavar="N", help="heaviest layers to list (default 10)")
    a.add_argument("--no-probe", action="store_true", help="static shape inference only (no onnxruntime run)")
    a.add_argument("--refresh-profile", action="store_true", help="re-calibrate the cpu profile (micro-benchmarks)")
    add_verbosity(a)


def run(args: argparse.Namespace) -> int:
    shapes = parse_shapes(args.shape)
    dims = parse_dims(args.dim)
    check_profile(args.target)
    if args.top < 0:
        raise UsageError("--top must be >= 0")
    # the first use of the cpu profile measures it (about twenty seconds): shown as it goes
    with ProgressView(enabled=progress_wanted(args.quiet)) as view, reporting(view):
        if args.refresh_profile and args.target == "cpu":
            cpu_profile(refresh=True)
        loaded = modelio.load(Path(args.model))
        report = analyze(loaded.model, shapes=shapes, dims=dims, target=args.target, probe=not args.no_probe)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render(report, top=args.top))
    return 0


