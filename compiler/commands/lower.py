"""``onnxforge lower``: a model on a target as onnxruntime runs it: which provider took each
node (onnxruntime's own record), the share of FLOPs that falls back to the CPU, and on request
onnxruntime's optimized model (``-o``), its ORT format (``--ort``) and a TensorRT EPContext
model (``--ep-context``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from onnxforge import modelio
from onnxforge.commands.common import add_verbosity, parse_dims, parse_shapes
from onnxforge.commands.runtime_args import (
    add_input_arguments,
    add_target_arguments,
    model_feeds,
    target_from_args,
)
from onnxforge.cost.execution import cost_report, node_flops, provider_flops
from onnxforge.errors import ModelError, UsageError
from onnxforge.runtime.emit import ep_context_model, optimized_model
from onnxforge.runtime.placement import placement
from onnxforge.runtime.placement import render as render_placement
from onnxforge.runtime.target import TENSORRT_EP

NAME = "lower"
HELP = "show which execution provider takes each node; write onnxruntime's optimized, .ort or EPContext model"

log = logging.getLogger("onnxforge.lower")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the .onnx model")
    p.add_argument("-o", "--output", metavar="OUT.onnx", help="write onnxruntime's optimized model for the target")
    p.add_argument("--ort", metavar="OUT.ort", help="write it in onnxruntime's ORT format")
    p.add_argument("--ep-context", metavar="OUT.onnx", help="write a TensorRT EPContext model (--target tensorrt)")
    p.add_argument("--embed-engine", action="store_true", help="with --ep-context: the engine inside the model, not beside it")
    p.add_argument(
        "--placement-from",
        choices=["auto", "assignment-info", "profiling"],
        default="auto",
        help="onnxruntime's record of the assignment (auto: the session's assignment info where this onnxruntime has it) or a profiled run",
    )
    add_target_arguments(p)
    add_input_arguments(p)
    p.add_argument("--json", action="store_true", help="print the placement and FLOPs per provider as JSON")
    add_verbosity(p)


def run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    outs = {"output": args.output, "ort": args.ort, "ep-context": args.ep_context}
    inputs = modelio.input_files(path, keep=True)
    taken: dict[Path, str] = {}
    for label, out in outs.items():
        if out is not None:  # before any work: no output over the input's files or another output
            taken[modelio.check_output_path(out, inputs=inputs, external_data=False, label=f"--{label}", taken=taken)] = f"--{label} file"
    if args.embed_engine and not args.ep_context:
        raise UsageError("--embed-engine goes with --ep-context")
    target = target_from_args(args)
    if args.ep_context and TENSORRT_EP not in target.providers:
        raise UsageError(f"--ep-context needs --target tensorrt (a provider that compiles engines); this run is on --target {target.name}")
    proto, feeds = model_feeds(path, args)
    placed = placement(str(path), target, method=args.placement_from, feeds=feeds)
    doc: dict[str, object] = {"placement": placed.to_json()}
    lines = render_placement(placed)
    if placed.ok:
        loaded = modelio.load(path)
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}
        report = cost_report(loaded.model, shapes={**shapes, **parse_shapes(args.shape)}, dims=parse_dims(args.dim))
        share = provider_flops(placed, node_flops(report))
        doc["flops"] = share.to_json()
        if share.total:
            lines.append(
                "  FLOPs: " + ", ".join(f"{p} {f / share.total * 100:.1f}%" for p, f in share.by_provider.items())
            )
        if share.warn:
            log.warning("%s", share.message(target.name))
    written = []
    if placed.ok:
        if args.output:
            written.append(optimized_model(str(path), target, args.output, format="onnx", inputs=inputs))
        if args.ort:
            written.append(optimized_model(str(path), target, args.ort, format="ort", inputs=inputs))
        if args.ep_context:
            written.append(ep_context_model(str(path), target, args.ep_context, embed=args.embed_engine, inputs=inputs))
    doc["written"] = [w.to_json() for w in written]
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        print("\n".join(lines))
        for w in written:
            print(f"wrote {w.path} ({w.format}, {w.bytes / 2**20:.1f} MiB" + (f", {w.nodes} nodes" if w.nodes is not None else "") + ")")
            for note in w.notes:
                print(f"  note: {note}")
    if not placed.ok:
        names = ", ".join(f"{n.name} ({n.domain + '.' if n.domain else ''}{n.op_type})" for n in placed.unplaced[:5])
        raise ModelError(f"onnxruntime cannot run {len(placed.unplaced)} node(s) on --target {target.name}: {names}")
    return 0
