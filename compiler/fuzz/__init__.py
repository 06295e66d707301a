"""A standing bad-input fuzzer for the command line: ``python -m onnxforge.fuzz`` (``make fuzz``).

It mutates small models -- the seeded builders of :mod:`onnxforge.models`, a control-flow model,
a QDQ model, a model with external data and, when fetched, a few small corpus models -- and runs
``onnxforge compile`` and ``onnxforge analyze`` on every mutant in a child process with a time and
memory limit. A run is a *defect* when it

* prints a traceback or an ``internal error`` line,
* hangs (runs past ``--timeout``), dies by a signal, or exits with a code other than 0, 1 or 2,
* leaves an output (or temporary) file behind although it failed, or succeeds with an output
  that onnx cannot load and check,
* changes or adds a file in the input's folder, or
* fails with an error that is not exactly one ``onnxforge: error:`` line (log lines aside).

Refusing a mutant cleanly (exit 1 or 2) or compiling it is fine. Mutant ``i`` of seed ``s`` is a
pure function of ``(s, i)``: ``--seed s --replay i`` rebuilds it and reruns it in a fresh
interpreter with the whole stderr. Failing cases are saved under ``--out`` (the mutated files
and ``case.json``), at most three per distinct defect, and a summary table is printed. The exit
status is 1 when a defect was found.

Children: by default a *zygote* process imports onnxforge, onnx and onnxruntime once and forks
one child per run, which is many times faster than a fresh interpreter per run (importing onnx
alone takes about 0.7 s). ``--cold`` starts ``python -m onnxforge.cli`` for every run instead,
and every defect found warm is rerun cold, once per distinct defect, to confirm it.

Modules: :mod:`~onnxforge.fuzz.parents` (the models that get mutated),
:mod:`~onnxforge.fuzz.protowalk` (walking a model proto), :mod:`~onnxforge.fuzz.mutations` and
:mod:`~onnxforge.fuzz.datamutations` (the mutation operators), :mod:`~onnxforge.fuzz.mutants`
(mutant ``i`` of a seed), :mod:`~onnxforge.fuzz.casefiles` (a case's files on disk),
:mod:`~onnxforge.fuzz.children` (child processes, timeouts, memory limits, the zygote),
:mod:`~onnxforge.fuzz.verdicts` (what counts as a defect), :mod:`~onnxforge.fuzz.cases` (one
mutant through ``compile`` and ``analyze``), :mod:`~onnxforge.fuzz.campaign` (a fuzzing run),
:mod:`~onnxforge.fuzz.reporting` (tallies, saved cases, the summary),
:mod:`~onnxforge.fuzz.selfcheck` and :mod:`~onnxforge.fuzz.cli` (the command line).
"""

from __future__ import annotations

from onnxforge.fuzz.campaign import fuzz
from onnxforge.fuzz.casefiles import DATA, MODEL, Folder, Symlink
from onnxforge.fuzz.cases import CaseResult, run_mutant
from onnxforge.fuzz.children import GIB, Runner, RunResult
from onnxforge.fuzz.cli import build_parser, main, select_parents
from onnxforge.fuzz.datamutations import mutate_bytes, mutate_external, mutate_tensor_data, mutate_values
from onnxforge.fuzz.mutants import (
    ANALYZE_VARIANTS,
    COMPILE_VARIANTS,
    CORPUS_WEIGHT,
    PROTO_MUTATORS,
    Generator,
    Mutant,
)
from onnxforge.fuzz.mutations import (
    NotApplicable,
    mutate_attribute,
    mutate_cycle,
    mutate_dims,
    mutate_dtype,
    mutate_field,
    mutate_metadata,
    mutate_names,
    mutate_structure,
    mutate_versions,
)
from onnxforge.fuzz.parents import DEFAULT_CORPUS, Parent, builtin_parents, corpus_parents
from onnxforge.fuzz.reporting import Stats, summary
from onnxforge.fuzz.selfcheck import SELF_CHECKS, self_check
from onnxforge.fuzz.verdicts import Problem, check_run, notes

__all__ = [
    "ANALYZE_VARIANTS", "COMPILE_VARIANTS", "CORPUS_WEIGHT", "DATA", "DEFAULT_CORPUS", "GIB", "MODEL", "PROTO_MUTATORS",
    "SELF_CHECKS", "CaseResult", "Folder", "Generator", "Mutant", "NotApplicable", "Parent", "Problem", "RunResult",
    "Runner", "Stats", "Symlink", "build_parser", "builtin_parents", "check_run", "corpus_parents", "fuzz", "main",
    "mutate_attribute", "mutate_bytes", "mutate_cycle", "mutate_dims", "mutate_dtype", "mutate_external",
    "mutate_field", "mutate_metadata", "mutate_names", "mutate_structure", "mutate_tensor_data", "mutate_values",
    "mutate_versions", "notes", "run_mutant", "select_parents", "self_check", "summary",
]
