"""``onnxforge passes``: the pipelines (presets) with their steps and flags, the passes with
their options, and the fusion rules; ``onnxforge passes NAME`` shows one pipeline as a tree
with the options it sets."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from onnxforge.commands.common import add_verbosity
from onnxforge.commands.reference import PIPELINE_FLAGS, option_rows, outline, tree
from onnxforge.errors import UsageError
from onnxforge.passes import PASSES_BY_NAME, registered_passes
from onnxforge.passes.fusion import ONNXRUNTIME_RULES, PORTABLE_RULES
from onnxforge.passes.plugins import load_plugins
from onnxforge.pipelines import PIPELINES, get_pipeline
from onnxforge.runtime.target import TARGETS
from onnxforge.tables import format_table

NAME = "passes"
HELP = "list pipelines (presets), passes and fusion rules with their options"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", nargs="?", metavar="PIPELINE", help="show this pipeline's steps as a tree, with the options it sets")
    p.add_argument("--target", choices=list(TARGETS), help="build the pipelines for this target (default: portable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_verbosity(p)


def _wrap(text: str, indent: str) -> str:
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def run(args: argparse.Namespace) -> int:
    if args.pipeline is not None:
        if args.pipeline not in PIPELINES:
            raise UsageError(f"unknown pipeline {args.pipeline!r} (known: {', '.join(PIPELINES)})")
        return _show_pipeline(args.pipeline, args.target, args.json)
    passes = registered_passes()
    plugin_sources = load_plugins(PASSES_BY_NAME).sources
    if args.json:
        data = {
            "pipelines": {
                name: {
                    "summary": info.summary,
                    "steps": outline(get_pipeline(name, target=args.target)),
                    "verification": info.verification.describe(),
                    "flags": list(PIPELINE_FLAGS.get(name, ())),
                }
                for name, info in PIPELINES.items()
            },
            "passes": {
                cls.name: {
                    "summary": cls.summary,
                    "lossless": cls.lossless,
                    "options": [{"name": n, "type": t, "default": d} for n, t, d in cls.Options.describe() if n != "progress"],
                    **({"plugin": plugin_sources[cls.name]} if cls.name in plugin_sources else {}),
                }
                for cls in passes
            },
            "rules": {
                name: [{"name": r.name, "summary": r.summary, "min_opset": r.min_opset} for r in rules]
                for name, rules in _rule_sets().items()
            },
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    where = f" for --target {args.target}" if args.target else " (portable; --target T shows a target's)"
    print(f"Pipelines (--pipeline NAME){where}; `onnxforge passes NAME` shows one as a tree:")
    for name, info in PIPELINES.items():
        print(f"\n  {name}")
        print(_wrap(info.summary, "      "))
        print(_wrap("steps: " + (outline(get_pipeline(name, target=args.target)) or "(none)"), "      "))
        print(_wrap(f"--verify: {info.verification.describe()}", "      "))
        if name in PIPELINE_FLAGS:
            print(_wrap("flags: " + " ".join(PIPELINE_FLAGS[name]), "      "))
    print("\nPasses (--passes A,B,...; options with --option PASS.NAME=VALUE or [option.PASS] in --config):")
    for cls in passes:
        kind = "lossless" if cls.lossless else "lossy"
        origin = f", plugin {plugin_sources[cls.name]}" if cls.name in plugin_sources else ""
        print(f"\n  {cls.name} ({kind}{origin})")
        print(_wrap(cls.summary, "      "))
        opts = ", ".join(f"{n}={d}" for n, _, d in option_rows(cls.Options))
        print(_wrap(f"options: {opts}" if opts else "options: none", "      "))
    print("\nFusion rules (tried in this order; `compile --explain NODE` says why one did not fire):")
    for pass_name, rules in _rule_sets().items():
        for line in format_table([pass_name, "what it fuses", "opset"], _rule_rows(rules), left=(1,)):
            print("  " + line)
        print()
    return 0


def _show_pipeline(name: str, target: str | None, as_json: bool) -> int:
    pipe = get_pipeline(name, target=target)
    info = PIPELINES[name]
    if as_json:
        print(json.dumps({"name": name, "target": target, "summary": info.summary, "tree": tree(pipe),
                          "verification": info.verification.describe(), "flags": list(PIPELINE_FLAGS.get(name, ()))}, indent=2))
        return 0
    print(f"{name}" + (f" (--target {target})" if target else " (portable)"))
    print(_wrap(info.summary, "  "))
    print(_wrap(f"--verify: {info.verification.describe()}", "  "))
    if name in PIPELINE_FLAGS:
        print(_wrap("flags: " + " ".join(PIPELINE_FLAGS[name]), "  "))
    print("\nsteps (options the pipeline sets in parentheses; `onnxforge passes` lists every option):")
    for line in tree(pipe) or ["(none)"]:
        print("  " + line)
    return 0


def _rule_sets() -> dict[str, Any]:
    return {"fuse": PORTABLE_RULES, "fuse-onnxruntime": ONNXRUNTIME_RULES}


def _rule_rows(rules: Any) -> list[list[str]]:
    return [[r.name, r.summary, f">= {r.min_opset}" if r.min_opset > 1 else "any"] for r in rules]
