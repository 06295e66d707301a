"""``onnxforge compile``: run a pipeline over a model and write the result."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxforge import modelio
from onnxforge.api import QuantizationOptions
from onnxforge.api import compile as compile_model
from onnxforge.commands.common import (
    add_verbosity,
    check_profile,
    parse_dims,
    parse_shapes,
)
from onnxforge.commands.config_file import apply_config, mark_explicit
from onnxforge.commands.measure import measure
from onnxforge.commands.progress_view import ProgressView, progress_wanted
from onnxforge.commands.report_files import check_report_paths, write_report
from onnxforge.errors import UsageError
from onnxforge.passes import get_pass
from onnxforge.passes.compression.pruning import PruneChannels, PruneMagnitude
from onnxforge.passes.compression.pruning.magnitude import parse_n_m
from onnxforge.progress import Stage
from onnxforge.runtime.target import TARGETS

NAME = "compile"
HELP = "optimize a model with a pipeline of passes"


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("model", help="input .onnx file (never modified)")
    c.add_argument("-o", "--output", help="output .onnx file (written atomically; required here or in --config)")
    c.add_argument(
        "--config", metavar="FILE.toml", help="settings for every flag below as TOML keys (flags given here override it; docs/USER_GUIDE.md)"
    )
    c.add_argument(
        "--pipeline", default="optimize", help="named pipeline (default: optimize = lossless + fusion; see `onnxforge passes`)"
    )
    c.add_argument(
        "--target",
        choices=list(TARGETS),
        help="runtime the model is for: cpu/cuda add onnxruntime contrib fusions; cpu-native also lowers convolutions "
        "to onnxruntime's NCHWc layout for this CPU's SIMD width (runs only on CPUs with the same width); tensorrt keeps to standard ops",
    )
    c.add_argument(
        "--explain", action="append", default=[], metavar="NODE", help="say which rules fired on NODE and why others did not"
    )
    z = c.add_argument_group("compression (--pipeline compress; the budget flags below apply too)")
    z.add_argument("--sparsity", type=float, metavar="S", help="fraction of each layer's weights pruned (0..1; compress: default 0)")
    z.add_argument("--bits", type=int, metavar="B", help="k-means codebooks of 2^B shared values per weight (2..8; compress: default 4)")
    z.add_argument(
        "--mixed-bits", action="store_true",
        help="B is the mean: each weight gets B-2..B+2 bits by its measured effect on the outputs, B bits per weight in total",
    )  # fmt: skip
    r = c.add_argument_group("pruning (--pipeline prune, with --sparsity S; the budget flags below apply too)")
    r.add_argument("--structured", action="store_true", help="remove whole channels and attention heads (shrinks the graph) instead of zeroing weights")
    r.add_argument("--n-m", metavar="N:M", help="N:M sparsity along input channels, e.g. 2:4 (TensorRT's sparse layout)")
    r.add_argument(
        "--prune-score",
        choices=["magnitude", "activation", "second-order", "l1", "l2", "bn"],
        help="what ranks weights/channels (default: activation-aware with --calibration, else magnitude/l2)",
    )
    r.add_argument(
        "--allocate-sparsity", action="store_true",
        help="S is the mean: each layer pruned S-0.2..S+0.2 by its measured effect on the outputs (needs --calibration)",
    )  # fmt: skip
    r.add_argument(
        "--channel-multiple", type=int, default=8, metavar="K", help="--structured: kept channel counts are multiples of K (default 8)"
    )
    q = c.add_argument_group("int8 quantization (--pipeline int8)")
    q.add_argument(
        "--calibration", metavar="DATA", help="calibration samples: a .npz (inputs by name, samples on axis 0), a folder of .npz, or 'synthetic'"
    )
    q.add_argument("--calibration-method", default="minmax", choices=["minmax", "percentile", "entropy", "mse"])
    q.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor instead of per output channel")
    q.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep NODE in float (repeatable)")
    q.add_argument("--min-sqnr", type=float, metavar="DB", help="keep layers in float until every output's SQNR reaches DB")
    q.add_argument(
        "--min-cosine", type=float, default=0.99, metavar="C", action=_Given,
        help="keep layers in float until every output's cosine reaches C (0: off); prune: prune them less (no default)",
    )
    q.add_argument("--max-accuracy-drop", type=float, metavar="POINTS", help="accuracy budget in points (needs --eval-data)")
    q.add_argument(
        "--eval",
        metavar="DATA",
        help="inputs the cosine/SQNR budget is measured on (like --calibration); default: every fifth calibration "
        "sample, held out of calibration",
    )
    q.add_argument(
        "--eval-data",
        metavar="NPZ",
        help="labelled evaluation data for --max-accuracy-drop: model inputs plus a 'labels' array (rows that are "
        "also calibration samples are left out)",
    )
    q.add_argument(
        "--allow-budget-miss",
        action="store_true",
        help="when the budget cannot be met, write the model anyway and say by how much it misses (default: fail)",
    )
    q.add_argument("--no-speed-guard", action="store_true", help="quantize even layers that make the model slower here")
    q.add_argument(
        "--smooth-alpha", type=float, default=0.7, metavar="A", help="SmoothQuant strength for MatMul inputs (0 turns it off)"
    )
    q.add_argument(
        "--padding-mask",
        default="auto",
        metavar="INPUT",
        help="input marking padding (1 = real token); errors are measured on real positions only "
        "(default auto: an attention_mask input; none: off)",
    )
    c.add_argument("--passes", help="comma-separated pass names to run once each, instead of --pipeline")
    c.add_argument("--disable", action="append", default=[], metavar="PASS", help="skip this pass (repeatable)")
    c.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="PASS.NAME=VALUE",
        help="set a pass option, e.g. constant-folding.size_limit=1048576 (repeatable)",
    )
    c.add_argument(
        "--verify",
        action="store_true",
        help="compare onnxruntime outputs before/after as the pipeline declares (lossless: allclose; fp16/int4: "
        "cosine and SQNR budget; int8: --min-cosine/--min-sqnr on held-out data); fail if they differ",
    )
    c.add_argument(
        "--dim", action="append", default=[], metavar="NAME=N", help="value of a symbolic dim (for --verify and the cost estimate)"
    )
    c.add_argument(
        "--shape", action="append", default=[], metavar="INPUT=1x3x224x224", help="input shape for the cost estimate (repeatable)"
    )
    c.add_argument("--cost-target", default="cpu", metavar="PROFILE", help="cost profile: cpu (measured), h100, a100")
    c.add_argument("--no-cost", action="store_true", help="skip the before/after cost estimate")
    c.add_argument(
        "--measure",
        action="store_true",
        help="time the input and the output on onnxruntime, interleaved (~4 s, on --target's provider; inputs from "
        "--shape/--dim), for the summary and --report",
    )
    c.add_argument(
        "--report",
        metavar="FILE",
        help="write a report: FILE.json (per-pass time, sizes and cost before/after) or FILE.html (one standalone page "
        "with per-layer charts, the pass timeline and the graph before/after, plus its numbers in FILE.json beside it)",
    )
    c.add_argument("--dump-ir", metavar="DIR", help="save the model after every pass that changed it")
    c.add_argument("--check-ir", action="store_true", help="verify IR invariants after every pass (slower)")
    c.add_argument(
        "--external-data",
        choices=["auto", "always", "never"],
        default="auto",
        help="write weights to OUTPUT.data (auto: when the input used it or the model exceeds 2 GB)",
    )
    add_verbosity(c)
    mark_explicit(c)


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``PASS.NAME=VALUE`` items as typed options by pass (each pass's options class parses
    its own values)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        pass_name, dot, opt = key.partition(".")
        if not sep or not dot or not pass_name or not opt:
            raise UsageError(f"--option expects PASS.NAME=VALUE, got {item!r}")
        cls = get_pass(pass_name)
        try:
            out.setdefault(pass_name, {})[opt] = cls.Options.parse_value(opt, raw)
        except KeyError:
            known = ", ".join(f.name for f in dataclasses.fields(cls.Options)) or "none"
            raise UsageError(f"pass {pass_name!r} has no option {opt!r} (options: {known})") from None
        except ValueError as e:
            raise UsageError(f"--option {item!r}: {e}") from None
    return out


def run(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser(prog=f"onnxforge {NAME}")
    add_arguments(parser)
    args = apply_config(args, parser)
    if not args.output:
        raise UsageError("compile needs -o/--output (or output in --config)")
    with ProgressView(enabled=progress_wanted(args.quiet), model_bytes=_size(Path(args.model))) as view:
        return _run(args, view)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _run(args: argparse.Namespace, view: ProgressView) -> int:
    src, out = Path(args.model), Path(args.output)
    ext = {"auto": None, "always": True, "never": False}[args.external_data]
    report = Path(args.report) if args.report else None
    # Before any work: no output (model, data file, report, dumps) may replace a file the input
    # reads, or another output. This parses the model (load reuses it): shown as loading.
    Stage(view, "load", f"loading {src.name}: reading").start()
    inputs = modelio.check_output_paths(src, out, external_data=ext, report=report, dump_dir=args.dump_ir)
    check_report_paths(report, inputs, out)
    view.model_bytes = sum(_size(p) for p in inputs)
    options = _pruning_options(args, _compression_options(args, parse_options(args.option)))
    shapes = parse_shapes(args.shape)
    qopts = _quantization_options(args)
    check_profile(args.cost_target)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes else None
    result = compile_model(
        src,
        args.pipeline,
        target=args.target,
        passes=passes,
        options=options,
        disable=args.disable,
        verify=args.verify,
        verify_dims=parse_dims(args.dim),
        check_ir=args.check_ir,
        dump_dir=args.dump_ir,
        cost=not args.no_cost,
        cost_target=args.cost_target,
        shapes=shapes,
        quantization=qopts,
        progress=view,
    )
    with Stage(view, "save", f"writing {out.name}"):
        result.save(out, external_data=ext)
    if args.measure:
        with Stage(view, "measure", "timing before/after"):
            measure(result.report, src, out, result.ir, args)
    view.close()
    if report is not None:
        write_report(report, result.report, inputs, out, src)
    if not args.quiet:
        print(result.report.summary())
        for node in args.explain:
            print(f"\nrules on node {node!r}:")
            for line in result.report.explain(node):
                print(f"  {line}")
        print(f"\nwrote {out}")
    return 0


def _quantization_options(args: argparse.Namespace) -> Any:
    quant_flags = [args.calibration, args.min_sqnr, args.max_accuracy_drop, args.eval_data, args.eval] + list(args.exclude)
    if args.pipeline in _COMPRESSION:
        return None  # the budget flags went to the compression passes
    if args.pipeline == "prune":
        return None  # the budget flags went to the pruning pass
    if args.pipeline != "int8":
        if any(f is not None and f != [] for f in quant_flags) or args.per_tensor or args.allow_budget_miss:
            raise UsageError("quantization flags (--calibration, --min-sqnr, ...) need --pipeline int8")
        return None
    return QuantizationOptions(
        calibration=args.calibration,
        method=args.calibration_method,
        per_channel=not args.per_tensor,
        exclude=tuple(args.exclude),
        min_sqnr=args.min_sqnr,
        min_cosine=args.min_cosine or None,
        max_accuracy_drop=args.max_accuracy_drop,
        eval_data=args.eval_data,
        eval_inputs=args.eval,
        allow_budget_miss=args.allow_budget_miss,
        speed_guard=not args.no_speed_guard,
        smooth_alpha=args.smooth_alpha or None,
        padding_mask=args.padding_mask,
        dims=parse_dims(args.dim),
    )




#: Pipelines whose budgeted passes take --calibration, --min-cosine, --max-accuracy-drop, ...
_COMPRESSION = ("compress", "low-rank")


def _compression_options(args: argparse.Namespace, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``options`` plus what the compression flags say, for the compress and low-rank
    pipelines (``--option`` values win)."""
    if args.pipeline not in _COMPRESSION:
        if args.bits is not None or args.mixed_bits or (args.sparsity is not None and args.pipeline != "prune"):
            raise UsageError("--bits, --mixed-bits and --sparsity need --pipeline compress")
        return options
    if (args.bits is not None or args.mixed_bits) and args.pipeline != "compress":
        raise UsageError("--bits and --mixed-bits need --pipeline compress")
    budget = {
        "calibration": args.calibration,
        "min_cosine": args.min_cosine or None,
        "min_sqnr": args.min_sqnr,
        "max_accuracy_drop": args.max_accuracy_drop,
        "eval_data": args.eval_data,
        "allow_budget_miss": args.allow_budget_miss,
        "padding_mask": args.padding_mask,
        "dims": parse_dims(args.dim) or None,
    }
    out = dict(options)
    if args.pipeline == "low-rank":
        out["low-rank"] = {**budget, **options.get("low-rank", {})}
        return out
    share = {**budget, **({"bits": args.bits} if args.bits is not None else {}), **({"mixed_bits": True} if args.mixed_bits else {})}
    out["weight-sharing"] = {**share, **options.get("weight-sharing", {})}
    if args.sparsity:
        if not 0 < args.sparsity < 1:
            raise UsageError(f"--sparsity must lie in (0, 1), got {args.sparsity}")
        out["prune"] = {"sparsity": args.sparsity, **options.get("prune", {})}
    return out


class _Given(argparse.Action):
    """Stores the value and notes that the user gave the flag (``args.given``): pruning takes
    ``--min-cosine`` only when given, int8 also by default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _pruning_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus the pruning pass's options from the flags (``--pipeline prune``):
    ``prune`` (unstructured, N:M) or ``prune-channels`` (``--structured``)."""
    flags = args.structured or args.n_m is not None or args.prune_score is not None or args.allocate_sparsity
    if args.pipeline != "prune":
        if flags:
            raise UsageError("--structured, --n-m, --prune-score and --allocate-sparsity need --pipeline prune")
        return options
    if args.structured and args.n_m is not None:
        raise UsageError("--n-m is unstructured sparsity: leave out --structured")
    if args.allocate_sparsity and (args.structured or args.n_m is not None):
        raise UsageError("--allocate-sparsity spreads unstructured --sparsity: leave out --structured and --n-m")
    sparsity = args.sparsity
    if sparsity is None and args.n_m is None:
        raise UsageError("--pipeline prune needs --sparsity S (a fraction in [0, 1)) or --n-m N:M")
    if sparsity is not None and not 0 <= sparsity < 1:
        raise UsageError(f"--sparsity must lie in [0, 1), got {sparsity}")
    opts: dict[str, Any] = {
        "calibration": args.calibration,
        "min_cosine": (args.min_cosine or None) if "min_cosine" in getattr(args, "given", ()) else None,
        "min_sqnr": args.min_sqnr,
        "max_accuracy_drop": args.max_accuracy_drop,
        "eval_data": args.eval_data,
        "eval_inputs": args.eval,
        "allow_budget_miss": args.allow_budget_miss,
        "padding_mask": args.padding_mask,
        "dims": parse_dims(args.dim) or None,
        "exclude": tuple(args.exclude),
    }
    if sparsity is not None:
        opts["sparsity"] = sparsity
    if args.prune_score is not None:
        opts["score"] = args.prune_score
    if args.structured:
        opts["multiple"] = args.channel_multiple
        name = PruneChannels.name
    else:
        if args.n_m is not None:
            try:
                opts["n_m"] = parse_n_m(args.n_m)
            except ValueError as e:
                raise UsageError(f"--n-m: {e}") from None
        if args.allocate_sparsity:
            opts["allocate"] = True
        name = PruneMagnitude.name
    out = dict(options)
    out[name] = {**opts, **options.get(name, {})}
    return out
