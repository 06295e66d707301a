"""What a run found: the tallies, failing cases saved with ``case.json`` (how to replay them
included), and the summary table."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from onnxforge.fuzz.casefiles import _write_files
from onnxforge.fuzz.cases import CaseResult
from onnxforge.fuzz.verdicts import Problem
from onnxforge.tables import format_table


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80] or "case"


@dataclass
class Stats:
    mutants: int = 0
    runs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, list[int]] = field(default_factory=dict)
    first: dict[str, CaseResult] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    note_first: dict[str, int] = field(default_factory=dict)
    confirmed: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0
    run_seconds: float = 0.0
    max_rss_kib: int = 0
    harness_errors: int = 0


def _save_case(out: Path, case: CaseResult, problem: Problem, seed: int, confirmed: bool | None) -> Path:
    folder = out / _slug(problem.signature) / f"mutant-{case.mutant.index}"
    if folder.exists():
        shutil.rmtree(folder)
    _write_files(folder, case.mutant.files)
    run = case.runs.get(problem.command)
    info = {
        "seed": seed,
        "index": case.mutant.index,
        "parent": case.mutant.parent,
        "mutations": case.mutant.mutations,
        "problem": {"kind": problem.kind, "command": problem.command, "detail": problem.detail},
        "all_problems": [p.signature for p in case.problems],
        "compile_args": case.mutant.compile_args,
        "analyze_args": case.mutant.analyze_args,
        "rc": run.rc if run else None,
        "signal": run.signal if run else None,
        "timed_out": run.timed_out if run else None,
        "seconds": round(run.seconds, 3) if run else None,
        "stderr": run.stderr[-5000:] if run else "",
        "confirmed_cold": confirmed,
        "replay": f"python -m onnxforge.fuzz --seed {seed} --replay {case.mutant.index}",
    }
    (folder / "case.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def summary(stats: Stats, seed: int) -> list[str]:
    rate = stats.mutants / stats.seconds if stats.seconds else 0.0
    lines = [
        f"fuzz: seed {seed}, {stats.mutants} mutants, {stats.runs} runs in {stats.seconds:.1f} s "
        f"({rate:.2f} mutants/s, {stats.run_seconds / max(stats.runs, 1) * 1000:.0f} ms per run, "
        f"peak child memory {stats.max_rss_kib / 1024:.0f} MiB)",
        "outcomes: " + ", ".join(f"{k} x{v}" for k, v in sorted(stats.outcomes.items())),
    ]
    if stats.harness_errors:
        lines.append(f"harness errors (mutants not run): {stats.harness_errors}")
    if stats.notes:
        lines.append("not defects, but a Python error behind a clean message (count, first mutant):")
        lines += [f"  {n:>5}  {stats.note_first[k]:>6}  {k[:120]}" for k, n in stats.notes.most_common(15)]
    if not stats.signatures:
        lines.append("no defects found")
        return lines
    rows = []
    for sig, seen in sorted(stats.signatures.items(), key=lambda kv: -len(kv[1])):
        case = stats.first[sig]
        rows.append([str(len(seen)), "yes" if stats.confirmed.get(sig) else "no", str(case.mutant.index),
                     case.mutant.parent, sig[:110]])
    lines.append(f"{len(stats.signatures)} distinct defects:")
    lines += ["  " + ln for ln in format_table(["count", "cold", "first", "parent", "defect"], rows, left=(3, 4))]
    return lines
