"""A fuzzing run: mutants ``0, 1, 2, ...`` of a seed on one or two warm runners until the time
or the mutant budget is spent, each new defect confirmed in a fresh interpreter."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import onnx

from onnxforge.fuzz.casefiles import MODEL
from onnxforge.fuzz.cases import CaseResult, run_mutant
from onnxforge.fuzz.children import GIB, Runner
from onnxforge.fuzz.mutants import Generator
from onnxforge.fuzz.parents import Parent
from onnxforge.fuzz.reporting import Stats, _save_case
from onnxforge.fuzz.verdicts import Problem, notes
from onnxforge.models.cnn import small_cnn


def _warm_up(runner: Runner, root: Path) -> None:
    """Run one good compile and analyze in a child (filling the on-disk caches: CPU profile,
    onnxruntime choices), then import in the zygote every module those runs imported."""
    folder = root / "warmup"
    folder.mkdir(parents=True)
    onnx.save(small_cnn(seed=0)[0], folder / MODEL)
    modules: set[str] = set()
    for i, argv in enumerate((["compile", str(folder / MODEL), "-o", str(folder / "o.onnx"), "--target", "cpu-native",
                               "--verify"], ["analyze", str(folder / MODEL)], ["compile", str(folder / MODEL), "-o",
                               str(folder / "o2.onnx"), "--pipeline", "lossless", "--check-ir"])):
        listing = folder / f"modules{i}.txt"
        runner.run(argv, folder, timeout=max(runner.timeout, 120.0), modules=listing)
        if listing.is_file():
            modules |= set(listing.read_text().split())
    runner.preload(sorted(modules))


def fuzz(
    *,
    seconds: float,
    seed: int,
    parents: Sequence[Parent],
    out: Path | None,
    workers: int = 1,
    warm: bool = True,
    timeout: float = 60.0,
    memory: int = 3 * GIB,
    max_mutants: int | None = None,
    per_signature: int = 3,
    log: Callable[[str], None] = print,
) -> Stats:
    """Run mutants ``0, 1, 2, ...`` of ``seed`` until ``seconds`` (or ``max_mutants``) are spent."""
    gen = Generator(parents, seed)
    stats = Stats()
    workers = max(1, min(workers, 2))
    root = Path(tempfile.mkdtemp(prefix="onnxforge-fuzz-"))
    runners = [Runner(warm=warm, timeout=timeout, memory=memory) for _ in range(workers)]
    free = list(runners)
    lock = threading.Lock()
    try:
        if warm:
            for r in runners:
                _warm_up(r, root / f"w{id(r)}")
        start = time.monotonic()
        deadline = start + seconds

        def job(i: int) -> CaseResult:
            with lock:
                runner = free.pop()
            try:
                work = root / str(i)
                try:
                    return run_mutant(runner, gen.mutant(i), work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            finally:
                with lock:
                    free.append(runner)

        index = 0
        failing = 0  # harness errors in a row (mutant generation, file writes): not CLI defects
        pending: set[Future[CaseResult]] = set()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while True:
                while (len(pending) < workers and time.monotonic() < deadline
                       and (max_mutants is None or index < max_mutants)):
                    pending.add(pool.submit(job, index))
                    index += 1
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        case = fut.result()
                    except Exception as e:
                        stats.harness_errors += 1
                        failing += 1
                        log(f"  harness error (not a CLI defect): {type(e).__name__}: {e}")
                        if failing >= 20:
                            raise
                        continue
                    failing = 0
                    _record(case, stats, out, seed, per_signature, log, timeout, memory)
        stats.seconds = time.monotonic() - start
    finally:
        for r in runners:
            r.close()
        shutil.rmtree(root, ignore_errors=True)
    return stats


def _record(case: CaseResult, stats: Stats, out: Path | None, seed: int, per_signature: int,
            log: Callable[[str], None], timeout: float, memory: int) -> None:
    stats.mutants += 1
    for command, res in case.runs.items():
        stats.runs += 1
        stats.run_seconds += res.seconds
        stats.max_rss_kib = max(stats.max_rss_kib, res.maxrss_kib)
        outcome = "timeout" if res.timed_out else f"signal {res.signal}" if res.signal else f"exit {res.rc}"
        stats.outcomes[f"{command}: {outcome}"] += 1
        for note in notes(res):
            stats.notes[note] += 1
            stats.note_first.setdefault(note, case.mutant.index)
    for problem in dict.fromkeys(case.problems):
        sig = problem.signature
        seen = stats.signatures.setdefault(sig, [])
        seen.append(case.mutant.index)
        confirmed = None
        if len(seen) == 1:
            stats.first[sig] = case
            confirmed = _confirm_cold(case, problem, timeout, memory)
            stats.confirmed[sig] = confirmed
            log(f"  defect at mutant {case.mutant.index} ({case.mutant.parent}: {'; '.join(case.mutant.mutations)}): "
                f"{sig}{'' if confirmed else ' (not reproduced in a fresh interpreter)'}")
        if out is not None and len(seen) <= per_signature:
            _save_case(out, case, problem, seed, confirmed if len(seen) == 1 else None)


def _confirm_cold(case: CaseResult, problem: Problem, timeout: float, memory: int) -> bool:
    """Rerun a mutant in a fresh ``python -m onnxforge.cli``: does the problem come back?"""
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-confirm-") as tmp, \
            Runner(warm=False, timeout=timeout, memory=memory) as runner:
        again = run_mutant(runner, case.mutant, Path(tmp) / "case")
    return any(p.kind == problem.kind and p.command == problem.command for p in again.problems)
