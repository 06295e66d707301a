"""One mutant run through ``compile`` and ``analyze`` in its own folder, every run checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnxforge.fuzz.casefiles import MODEL, _digest_folder, _write_files
from onnxforge.fuzz.children import Runner, RunResult
from onnxforge.fuzz.mutants import Mutant
from onnxforge.fuzz.verdicts import Problem, check_run


@dataclass
class CaseResult:
    mutant: Mutant
    runs: dict[str, RunResult]
    problems: list[Problem]


def run_mutant(runner: Runner, mutant: Mutant, work: Path) -> CaseResult:
    """Write the mutant under ``work``, compile and analyze it, and check every run."""
    in_dir, out_dir = work / "in", work / "out"
    _write_files(in_dir, mutant.files)
    out_dir.mkdir(parents=True)
    model = in_dir / MODEL
    before = _digest_folder(in_dir)
    problems: list[Problem] = []
    runs: dict[str, RunResult] = {}
    out = out_dir / "compiled.onnx"
    c_args = [a.replace("@OUT", str(out_dir)) for a in mutant.compile_args]
    for command, argv, folder in (
        ("compile", ["compile", str(model), "-o", str(out), *c_args], out_dir),
        ("analyze", ["analyze", str(model), *mutant.analyze_args], None),
    ):
        res = runner.run(argv, work)
        runs[command] = res
        produced = [out] + [out_dir / "report.json" for a in c_args if a.endswith("report.json")] if command == "compile" else []
        problems += check_run(command, res, folder, produced)
        after = _digest_folder(in_dir)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(Problem("input-modified", command, f"changed: {', '.join(changed[:3])}"))
            before = after
    return CaseResult(mutant, runs, problems)
