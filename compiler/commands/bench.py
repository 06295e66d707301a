"""``onnxforge bench``: latency percentiles, throughput, peak memory and session-creation time
of a model on a target; ``--compare OTHER.onnx`` times two models interleaved and reports the
ratio. ``--json`` prints the ``onnxforge.bench/1`` document (docs/LOWERING.md)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from onnxforge.commands.common import add_verbosity
from onnxforge.commands.runtime_args import (
    add_input_arguments,
    add_target_arguments,
    model_feeds,
    target_from_args,
)
from onnxforge.errors import UsageError
from onnxforge.runtime.bench import bench, compare, render

NAME = "bench"
HELP = "time a model on a target: latency p50/p90/p99, throughput, memory (--compare: two models interleaved)"


class _Warnings(logging.Handler):
    """Collects the warnings logged while benchmarking (the fallback one), for --json."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("model", help="the .onnx model to time")
    b.add_argument("--compare", metavar="OTHER.onnx", help="also time OTHER, interleaved, and report OTHER's latency / MODEL's")
    add_target_arguments(b)
    add_input_arguments(b)
    t = b.add_argument_group("timing")
    t.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs after the session is made (default 5)")
    t.add_argument("--runs", type=int, default=10, metavar="N", help="at least N timed runs (rounds with --compare; default 10)")
    t.add_argument("--max-runs", type=int, metavar="N", help="at most N timed runs (default 10000; 400 rounds with --compare)")
    t.add_argument("--seconds", type=float, metavar="S", help="time for at least S seconds (default 3; 10 with --compare)")
    b.add_argument("--json", action="store_true", help="print the onnxforge.bench/1 JSON document (docs/LOWERING.md)")
    add_verbosity(b)


def run(args: argparse.Namespace) -> int:
    if args.warmup < 0 or args.runs < 1 or (args.max_runs is not None and args.max_runs < args.runs):
        raise UsageError("--warmup must be >= 0, --runs >= 1 and --max-runs >= --runs")
    if args.seconds is not None and not 0 <= args.seconds <= 3600:
        raise UsageError("--seconds must be between 0 and 3600")
    collector = _Warnings()
    logging.getLogger("onnxforge").addHandler(collector)
    try:
        target = target_from_args(args)
        path = Path(args.model)
        _, feeds = model_feeds(path, args)
        if args.compare:
            other = Path(args.compare)
            _, other_feeds = model_feeds(other, args)
            report = compare(
                [str(path), str(other)],
                target,
                [feeds, other_feeds],
                warmup=args.warmup,
                min_runs=args.runs,
                max_runs=args.max_runs or 400,
                seconds=10.0 if args.seconds is None else args.seconds,
            )
        else:
            report = bench(
                str(path),
                target,
                feeds,
                warmup=args.warmup,
                min_runs=args.runs,
                max_runs=args.max_runs or 10_000,
                seconds=3.0 if args.seconds is None else args.seconds,
            )
    finally:
        logging.getLogger("onnxforge").removeHandler(collector)
    report.target["requested"] = args.target
    report.warnings.extend(collector.messages)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print("\n".join(line for line in render(report) if not line.startswith("warning: ")))
    return 0
