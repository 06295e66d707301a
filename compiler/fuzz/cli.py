"""The command line of ``python -m onnxforge.fuzz``: the options, the choice of models, and
a fuzzing run, a replay or the self-check."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from onnxforge.fuzz.campaign import fuzz
from onnxforge.fuzz.cases import run_mutant
from onnxforge.fuzz.children import GIB, Runner
from onnxforge.fuzz.mutants import Generator
from onnxforge.fuzz.parents import DEFAULT_CORPUS, Parent, builtin_parents, corpus_parents
from onnxforge.fuzz.reporting import summary
from onnxforge.fuzz.selfcheck import self_check

#: The first paragraph of the package's docstring.
DESCRIPTION = "A standing bad-input fuzzer for the command line: ``python -m onnxforge.fuzz`` (``make fuzz``)."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m onnxforge.fuzz", description=DESCRIPTION)
    p.add_argument("--seconds", type=float, default=120.0, help="time budget (default 120)")
    p.add_argument("--seed", type=int, default=0, help="mutant i of a seed is always the same (default 0)")
    p.add_argument("--max-mutants", type=int, help="stop after this many mutants")
    p.add_argument("--out", default="out/fuzz", help="folder for failing cases (default out/fuzz)")
    p.add_argument("--models", help="comma-separated built-in models to mutate (default: all): "
                   + ", ".join(_BUILTIN_NAMES))
    p.add_argument("--corpus-models", default=",".join(DEFAULT_CORPUS),
                   help="comma-separated corpus models to mutate when present ('' or 'none': none)")
    p.add_argument("--workers", type=int, default=1, choices=[1, 2], help="mutants run side by side (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as a hang (default 60)")
    p.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit per run (default 3 GiB)")
    p.add_argument("--cold", action="store_true", help="a fresh interpreter per run (slower; what users run)")
    p.add_argument("--replay", help="comma-separated mutant indices: rebuild, run cold and show them")
    p.add_argument("--self-check", action="store_true", help="check that the harness catches each kind of defect")
    return p


_BUILTIN_NAMES = ("small_cnn", "mlp_chain", "transformer", "attention", "control_flow", "qdq", "mlp_external")


def select_parents(models: str | None, corpus_models: str | None) -> list[Parent]:
    parents = builtin_parents()
    if models:
        wanted = {m.strip() for m in models.split(",") if m.strip()}
        unknown = wanted - {p.name for p in parents}
        if unknown:
            raise SystemExit(f"unknown built-in model(s): {', '.join(sorted(unknown))}")
        parents = [p for p in parents if p.name in wanted]
    names = [n.strip() for n in (corpus_models or "").split(",") if n.strip() and n.strip() != "none"]
    return parents + corpus_parents(names)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_check:
        return 0 if self_check(warm=not args.cold) else 1
    parents = select_parents(args.models, args.corpus_models)
    memory = int(args.memory_gib * GIB)
    if args.replay:
        gen = Generator(parents, args.seed)
        found = False
        with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-replay-") as tmp, \
                Runner(warm=False, timeout=args.timeout, memory=memory) as runner:
            for i in (int(x) for x in args.replay.split(",")):
                case = run_mutant(runner, gen.mutant(i), Path(tmp) / str(i))
                print(f"mutant {i} ({case.mutant.parent}): {'; '.join(case.mutant.mutations)}")
                for command, res in case.runs.items():
                    argv_ = case.mutant.compile_args if command == "compile" else case.mutant.analyze_args
                    print(f"  {command} {' '.join(argv_)}: exit {res.rc} signal {res.signal} "
                          f"timeout {res.timed_out} ({res.seconds:.2f} s)")
                    for ln in res.stderr.splitlines()[-40:]:
                        print(f"    | {ln}")
                for p in case.problems:
                    print(f"  DEFECT {p.signature}")
                found |= bool(case.problems)
        return 1 if found else 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(p.name for p in parents)
    print(f"fuzz: {args.seconds:g} s, seed {args.seed}, {'cold' if args.cold else 'warm'} children, "
          f"models: {names}", flush=True)
    stats = fuzz(seconds=args.seconds, seed=args.seed, parents=parents, out=out, workers=args.workers,
                 warm=not args.cold, timeout=args.timeout, memory=memory, max_mutants=args.max_mutants,
                 log=lambda s: print(s, flush=True))
    for line in summary(stats, args.seed):
        print(line)
    summary_file = out / "summary.json"
    summary_file.write_text(json.dumps({
        "seed": args.seed, "mutants": stats.mutants, "runs": stats.runs, "seconds": round(stats.seconds, 2),
        "outcomes": dict(stats.outcomes),
        "notes": {k: {"count": n, "first": stats.note_first[k]} for k, n in stats.notes.items()},
        "defects": {sig: {"count": len(seen), "mutants": seen[:20], "confirmed_cold": stats.confirmed.get(sig)}
                    for sig, seen in stats.signatures.items()},
    }, indent=2) + "\n")
    if stats.signatures:
        print(f"cases saved under {out}/ (replay one with --seed {args.seed} --replay INDEX)")
    return 1 if stats.signatures else 0
