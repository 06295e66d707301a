"""``onnxforge diff A B``: how model B differs from model A, in structure (nodes per op type,
graph inputs and outputs, initializers added, removed and changed) and in numbers (both run on
onnxruntime on the same generated inputs, outputs matched by name). ``--json`` prints the
``onnxforge.diff/1`` document (:meth:`onnxforge.model_diff.ModelDiff.to_dict`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxforge import modelio
from onnxforge.analysis.shapes import bind_inputs
from onnxforge.commands.common import add_verbosity, parse_dims, parse_shapes
from onnxforge.commands.inputs import load_npz, run_feeds
from onnxforge.commands.runtime_args import add_input_arguments
from onnxforge.errors import UsageError
from onnxforge.model_diff import interface_problems, numerical_diff, structural_diff

NAME = "diff"
HELP = "compare two models: nodes per op type, initializers, inputs/outputs, onnxruntime outputs on the same inputs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A.onnx", help="the reference model")
    p.add_argument("b", metavar="B.onnx", help="the model compared with it")
    add_input_arguments(p)
    p.add_argument("--structure-only", action="store_true", help="compare structure and weights only; do not run the models")
    p.add_argument("--top", type=int, default=20, metavar="N", help="changed initializers to list (default 20; --json lists all)")
    p.add_argument("--json", action="store_true", help="print the onnxforge.diff/1 JSON document")
    add_verbosity(p)


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise UsageError("--top must be >= 0")
    path_a, path_b = Path(args.a), Path(args.b)
    a = modelio.load(path_a).model
    b = modelio.load(path_b).model
    diff = structural_diff(a, b)
    if not args.structure_only:
        problems = interface_problems(diff, a, b)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UsageError(
                f"cannot run both models on the same inputs: {problems[0]}{more}; --structure-only compares structure alone"
            )
        given = load_npz(args.input) if args.input else {}
        names = {v.name for v in a.graph.inputs}
        shapes = {**parse_shapes(args.shape), **{k: tuple(v.shape) for k, v in given.items() if k in names}}
        # sizes the model implies, a batch of 1; an open height, width or sequence is refused
        # rather than run at 1, where the comparison would say little
        bindings = bind_inputs(a, shapes, parse_dims(args.dim))
        if not bindings.complete:
            raise UsageError(f"cannot make inputs for the models: {bindings.missing_message()}")
        proto = modelio.read_proto(path_a)
        feeds = run_feeds(proto, shapes=bindings.inputs, dims=bindings.dims, given=given, seed=args.seed)
        diff.feeds = {k: f"{v.dtype}[{'x'.join(str(d) for d in v.shape)}]" for k, v in feeds.items()}
        diff.outputs = numerical_diff(path_a, path_b, feeds)
    if args.json:
        print(json.dumps(diff.to_dict(), indent=2))
    elif not args.quiet:
        print(f"A: {path_a}\nB: {path_b}\n")
        print("\n".join(diff.render(top=args.top)))
    return 0
