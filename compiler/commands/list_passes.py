"""``onnxforge passes``: the pipelines, passes and rules, with their options."""

from __future__ import annotations

import argparse
import json
from typing import Any

from onnxforge.commands.common import add_verbosity
from onnxforge.passes import registered_passes
from onnxforge.passes.fusion import ONNXRUNTIME_RULES, PORTABLE_RULES
from onnxforge.pipelines import PIPELINES
from onnxforge.tables import format_table

NAME = "passes"
HELP = "list passes and pipelines with their options"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_verbosity(p)


def run(args: argparse.Namespace) -> int:
    if args.json:
        data = {
            "pipelines": {name: info.summary for name, info in PIPELINES.items()},
            "passes": {
                cls.name: {
                    "summary": cls.summary,
                    "lossless": cls.lossless,
                    "options": [{"name": n, "type": t, "default": d} for n, t, d in cls.Options.describe()],
                }
                for cls in registered_passes()
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
    for cls in registered_passes():
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


