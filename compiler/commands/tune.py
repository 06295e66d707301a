"""``onnxforge tune``: search the session options (threads, execution mode, optimization level)
that run a model fastest here, pruned by the cost model; write them next to the model
(``MODEL.session.json``, read back by ``bench --session``) and, unless ``--no-grid``, time the
full grid in the same run to show what the pruning cost."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from onnxforge import modelio
from onnxforge.commands.common import add_verbosity, parse_dims, parse_shapes
from onnxforge.commands.runtime_args import (
    add_input_arguments,
    add_target_arguments,
    model_feeds,
    target_from_args,
)
from onnxforge.cost.execution import cost_report, tune_hints
from onnxforge.errors import UsageError
from onnxforge.runtime.tune import render, tune

NAME = "tune"
HELP = "find the fastest session options (threads, execution mode, optimization level) for a model here"


def add_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("model", help="the .onnx model")
    t.add_argument("-o", "--output", metavar="FILE.json", help="where to write the best options (default: MODEL.session.json beside the model)")
    add_target_arguments(t, session=False)
    add_input_arguments(t)
    t.add_argument("--no-grid", action="store_true", help="time only the pruned search, not the full grid as well")
    t.add_argument("--cores", type=int, metavar="N", help="cores to plan thread counts for (default: this machine's)")
    t.add_argument("--rounds", type=int, default=10, metavar="N", help="interleaved rounds per configuration (default 10)")
    t.add_argument("--seconds-each", type=float, default=2.0, metavar="S", help="time budget per configuration (default 2)")
    t.add_argument("--json", action="store_true", help="print the whole search as JSON")
    add_verbosity(t)


def default_output(model: Path) -> Path:
    return model.with_name(model.stem + ".session.json")


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1 or not 0 < args.seconds_each <= 600 or (args.cores is not None and args.cores < 1):
        raise UsageError("--rounds must be >= 1, --seconds-each in (0, 600] and --cores >= 1")
    path = Path(args.model)
    out = Path(args.output) if args.output else default_output(path)
    inputs = modelio.input_files(path, keep=True)
    target = target_from_args(args)
    proto, feeds = model_feeds(path, args)
    loaded = modelio.load(path)
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}
    report = cost_report(loaded.model, shapes={**shapes, **parse_shapes(args.shape)}, dims=parse_dims(args.dim))
    cores = args.cores or os.cpu_count() or 1
    hints = tune_hints(loaded.model, report, cores)
    progress = None if args.quiet or args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = tune(
        str(path), target, feeds, hints, cores=cores, full_grid=not args.no_grid, rounds=args.rounds, seconds_each=args.seconds_each, progress=progress
    )
    text = json.dumps(result.session_file(path.name), indent=2) + "\n"
    modelio.write_file_atomic(out, text.encode(), inputs=inputs, label="session options")
    if args.json:
        print(json.dumps({**result.to_json(), "written": str(out)}, indent=2))
    elif not args.quiet:
        print("\n".join(render(result)))
        print(f"wrote {out} (use it with: onnxforge bench {path} --session {out})")
    return 0
