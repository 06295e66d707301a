"""A short seeded slice of the bad-input fuzzer (``make fuzz`` runs it for minutes): mutated
models through ``compile`` and ``analyze`` in child processes, and not one defect (traceback,
internal error, hang, signal, output left after a failure, changed input, messy error)."""

from __future__ import annotations

import os

import pytest

from onnxforge import fuzz
from onnxforge.models.corpus import list_corpus

SECONDS = float(os.environ.get("ONNXFORGE_FUZZ_SLICE_SECONDS", "25"))
SEED = 20261204


def test_the_harness_catches_each_kind_of_defect():
    """A stand-in CLI that hangs, segfaults, raises, prints an internal error or two lines,
    leaves its output after failing, touches its input or exits 7: each one is caught, and a
    clean refusal (warning line included) and a clean success are not."""
    lines: list[str] = []
    assert fuzz.self_check(warm=True, log=lines.append), "\n".join(lines)


def test_mutants_are_a_function_of_seed_and_index():
    parents = fuzz.builtin_parents()
    a, b = fuzz.Generator(parents, 3), fuzz.Generator(parents, 3)
    for i in (0, 1, 17):
        assert a.mutant(i) == b.mutant(i)
    assert len({a.mutant(i).files[fuzz.MODEL] for i in range(20)}) >= 18
    kinds = {m.split(" ")[0].rstrip(":") for i in range(200) for m in a.mutant(i).mutations}
    assert {"field", "dims", "attribute", "cycle", "bytes", "external"} <= kinds, kinds


def test_seeded_slice_finds_no_defects(tmp_path):
    parents = fuzz.builtin_parents()
    if "oww_hey_rhasspy" in list_corpus():
        parents += fuzz.corpus_parents(["oww_hey_rhasspy"])
    log: list[str] = []
    stats = fuzz.fuzz(seconds=SECONDS, seed=SEED, parents=parents, out=tmp_path, workers=1, timeout=60.0,
                      log=log.append)
    report = "\n".join([*log, *fuzz.summary(stats, SEED)])
    # The slice must have done real work: enough mutants, some refused and some compiled.
    assert stats.mutants >= min(25, SECONDS), report
    assert stats.outcomes["compile: exit 0"] > 0 and stats.outcomes["compile: exit 1"] > 0, report
    if stats.signatures:
        pytest.fail(f"the fuzzer found defects (cases in {tmp_path}):\n{report}", pytrace=False)
