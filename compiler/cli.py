"""The ``onnxforge`` command line.

Exit codes: 0 success, 1 model error (unreadable or invalid model, failed verification, failing
pass), 2 usage error (bad arguments, missing input, unwritable output). Errors are one line on
stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxforge import __version__, modelio
from onnxforge.analysis.shapes import parse_dim_spec, parse_shape_spec
from onnxforge.api import QuantizationOptions
from onnxforge.api import compile as compile_model
from onnxforge.calibration.progress import ProgressBar
from onnxforge.cost import analyze
from onnxforge.cost.render import render
from onnxforge.cost.roofline import PROFILES, cpu_profile
from onnxforge.errors import OnnxForgeError, UsageError
from onnxforge.passes import ALL_PASSES, get_pass
from onnxforge.passes.fusion import ONNXRUNTIME_RULES, PORTABLE_RULES
from onnxforge.pipelines import PIPELINES
from onnxforge.runtime.target import TARGETS
from onnxforge.tables import format_table

log = logging.getLogger("onnxforge")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse prints usage + exits 2
        self.print_usage(sys.stderr)
        self.exit(2, f"onnxforge: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxforge", description="ONNX graph-rewriting compiler.")
    parser.add_argument("--version", action="version", version=f"onnxforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("compile", help="optimize a model with a pipeline of passes")
    c.add_argument("model", help="input .onnx file (never modified)")
    c.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
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
    q = c.add_argument_group("int8 quantization (--pipeline int8)")
    q.add_argument(
        "--calibration", metavar="DATA", help="calibration samples: a .npz (inputs by name, samples on axis 0), a folder of .npz, or 'synthetic'"
    )
    q.add_argument("--calibration-method", default="minmax", choices=["minmax", "percentile", "entropy", "mse"])
    q.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor instead of per output channel")
    q.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep NODE in float (repeatable)")
    q.add_argument("--min-sqnr", type=float, metavar="DB", help="keep layers in float until every output's SQNR reaches DB")
    q.add_argument(
        "--min-cosine", type=float, default=0.99, metavar="C", help="keep layers in float until every output's cosine reaches C (0: off)"
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
    c.add_argument("--report", metavar="FILE.json", help="write a JSON report (per-pass time, sizes before/after)")
    c.add_argument("--dump-ir", metavar="DIR", help="save the model after every pass that changed it")
    c.add_argument("--check-ir", action="store_true", help="verify IR invariants after every pass (slower)")
    c.add_argument(
        "--external-data",
        choices=["auto", "always", "never"],
        default="auto",
        help="write weights to OUTPUT.data (auto: when the input used it or the model exceeds 2 GB)",
    )
    _verbosity(c)

    a = sub.add_parser("analyze", help="estimate MACs, FLOPs, parameters, memory and latency")
    a.add_argument("model", help="input .onnx file")
    a.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="INPUT=1x3x224x224",
        help="fix an input's shape (repeatable); open dims are otherwise assumed 1",
    )
    a.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N", help="fix a symbolic dim by name (repeatable)")
    a.add_argument("--target", default="cpu", metavar="PROFILE", help="latency profile: cpu (measured here, cached), h100, a100")
    a.add_argument("--json", action="store_true", help="print the full analysis as JSON")
    a.add_argument("--top", type=int, default=10, metavar="N", help="heaviest layers to list (default 10)")
    a.add_argument("--no-probe", action="store_true", help="static shape inference only (no onnxruntime run)")
    a.add_argument("--refresh-profile", action="store_true", help="re-measure the cpu profile")
    _verbosity(a)

    p = sub.add_parser("passes", help="list passes and pipelines with their options")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _verbosity(p)
    return parser


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug); tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("onnxforge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
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


def _parse_dims(items: Sequence[str]) -> dict[str, int]:
    return dict(parse_dim_spec(item) for item in items)


def _parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    return dict(parse_shape_spec(item) for item in items)


def _check_profile(name: str) -> None:
    if name not in PROFILES:
        raise UsageError(f"unknown cost profile {name!r} (choose from {', '.join(PROFILES)})")


def cmd_compile(args: argparse.Namespace) -> int:

    src, out = Path(args.model), Path(args.output)
    ext = {"auto": None, "always": True, "never": False}[args.external_data]
    report = Path(args.report) if args.report else None
    # Before any work: no output (model, data file, report, dumps) may replace a file the input
    # reads, or another output.
    inputs = modelio.check_output_paths(src, out, external_data=ext, report=report, dump_dir=args.dump_ir)
    options = _parse_options(args.option)
    shapes = _parse_shapes(args.shape)
    qopts = _quantization_options(args)
    _check_profile(args.cost_target)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes else None
    result = compile_model(
        src,
        args.pipeline,
        target=args.target,
        passes=passes,
        options=options,
        disable=args.disable,
        verify=args.verify,
        verify_dims=_parse_dims(args.dim),
        check_ir=args.check_ir,
        dump_dir=args.dump_ir,
        cost=not args.no_cost,
        cost_target=args.cost_target,
        shapes=shapes,
        quantization=qopts,
    )
    if qopts is not None and qopts.progress is not None:
        qopts.progress.close()
    result.save(out, external_data=ext)
    if report is not None:
        _write_json_atomic(report, result.report.to_dict(), inputs, taken={modelio.output_target(out): "output model"})
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
    if args.pipeline != "int8":
        if any(f is not None and f != [] for f in quant_flags) or args.per_tensor or args.allow_budget_miss:
            raise UsageError("quantization flags (--calibration, --min-sqnr, ...) need --pipeline int8")
        return None
    progress = None
    if not args.quiet:
        progress = ProgressBar("calibrating")
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
        progress=progress,
        dims=_parse_dims(args.dim),
    )


def _write_json_atomic(
    path: Path, data: dict[str, Any], inputs: Sequence[Path] = (), taken: dict[Path, str] | None = None
) -> None:
    """Write the report like a model: atomically, through a symlink, with the usual new-file
    mode, never over one of ``inputs`` (the input's files) or ``taken`` (other outputs)."""
    text = json.dumps(data, indent=2) + "\n"
    modelio.write_file_atomic(path, text.encode(), inputs=inputs, label="report", taken=taken)


def cmd_analyze(args: argparse.Namespace) -> int:
    shapes = _parse_shapes(args.shape)
    dims = _parse_dims(args.dim)
    _check_profile(args.target)
    if args.top < 0:
        raise UsageError("--top must be >= 0")
    if args.refresh_profile and args.target == "cpu":
        cpu_profile(refresh=True)
    loaded = modelio.load(Path(args.model))
    report = analyze(loaded.model, shapes=shapes, dims=dims, target=args.target, probe=not args.no_probe)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render(report, top=args.top))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    if args.json:
        data = {
            "pipelines": {name: info.summary for name, info in PIPELINES.items()},
            "passes": {
                cls.name: {
                    "summary": cls.summary,
                    "lossless": cls.lossless,
                    "options": [{"name": n, "type": t, "default": d} for n, t, d in cls.Options.describe()],
                }
                for cls in ALL_PASSES
            },
            "rules": {
                name: [{"name": r.name, "summary": r.summary, "min_opset": r.min_opset} for r in rules]
                for name, rules in _rule_sets().items()
            },
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    print("Pipelines (--pipeline NAME):")
    for name, info in PIPELINES.items():
        print(f"  {name:<12} {info.summary}")
    print("\nPasses (--passes A,B,...; options with --option PASS.NAME=VALUE):")
    rows = []
    for cls in ALL_PASSES:
        opts = ", ".join(f"{n}={d!r}" for n, _, d in cls.Options.describe()) or "-"
        rows.append([cls.name, cls.summary, opts])
    for line in format_table(["pass", "what it does", "options (defaults)"], rows, left=(1, 2)):
        print("  " + line)
    print("\nFusion rules (tried in this order; `compile --explain NODE` says why one did not fire):")
    for pass_name, rules in _rule_sets().items():
        for line in format_table([pass_name, "what it fuses", "opset"], _rule_rows(rules), left=(1,)):
            print("  " + line)
        print()
    return 0


def _rule_sets() -> dict[str, Any]:
    return {"fuse": PORTABLE_RULES, "fuse-onnxruntime": ONNXRUNTIME_RULES}


def _rule_rows(rules: Any) -> list[list[str]]:
    return [[r.name, r.summary, f">= {r.min_opset}" if r.min_opset > 1 else "any"] for r in rules]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose, args.quiet)
    handlers = {"compile": cmd_compile, "analyze": cmd_analyze, "passes": cmd_passes}
    try:
        return handlers[args.command](args)
    except OnnxForgeError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"onnxforge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("onnxforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print("onnxforge: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line unless -v
        if args.verbose:
            traceback.print_exc()
        msg = " ".join(str(e).split())[:300]
        print(f"onnxforge: internal error: {type(e).__name__}: {msg} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
