"""``--self-check``: a stand-in CLI misbehaves in every way the harness must notice, and
behaves well in the ways it must not flag."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from onnxforge.fuzz.casefiles import MODEL, _digest_folder
from onnxforge.fuzz.children import Runner
from onnxforge.fuzz.verdicts import Problem, check_run
from onnxforge.models.cnn import small_cnn


def _misbehave(argv: list[str]) -> int:
    """A stand-in CLI for ``--self-check``: ``argv[0]`` says how to misbehave."""
    how, rest = argv[0], argv[1:]
    out = Path(rest[rest.index("-o") + 1]) if "-o" in rest else None
    if how == "hang":
        time.sleep(3600)
    if how == "signal":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "raise":
        raise RuntimeError("self-check")
    if how == "internal":
        print("onnxforge: internal error: KeyError: 'x' (run with -v for the traceback)", file=sys.stderr)
        return 1
    if how == "two-lines":
        print("onnxforge: error: one\nand another", file=sys.stderr)
        return 1
    if how == "leave-output" and out is not None:
        out.write_bytes(b"partial")
        print("onnxforge: error: failed after writing", file=sys.stderr)
        return 1
    if how == "touch-input":
        with open(rest[1], "ab") as f:
            f.write(b"\0")
        return 0 if out is None else _misbehave(["ok", *rest])
    if how == "exit-7":
        return 7
    if how == "refuse":
        print("WARNING onnxforge.x: a warning is fine", file=sys.stderr)
        print("onnxforge: error: clean refusal", file=sys.stderr)
        return 1
    if out is not None:  # ok
        onnx.save(small_cnn()[0], out)
    return 0


SELF_CHECKS = {
    "hang": "hang", "signal": "signal", "raise": "traceback", "internal": "internal-error",
    "two-lines": "messy-error", "leave-output": "output-on-failure", "touch-input": "input-modified",
    "exit-7": "exit-code", "refuse": None, "ok": None,
}


def self_check(warm: bool = True, log: Callable[[str], None] = print) -> bool:
    """Run the stand-in CLI's misbehaviours through the harness: each must be caught, and the
    clean refusal and the clean success must not be."""
    good = True
    with tempfile.TemporaryDirectory(prefix="onnxforge-fuzz-self-") as tmp, \
            Runner(warm=warm, timeout=3.0) as runner:
        for how, expected in SELF_CHECKS.items():
            work = Path(tmp) / how
            in_dir, out_dir = work / "in", work / "out"
            in_dir.mkdir(parents=True)
            out_dir.mkdir()
            model = in_dir / MODEL
            model.write_bytes(b"model")
            before = _digest_folder(in_dir)
            out = out_dir / "compiled.onnx"
            res = runner.run([how, "compile", str(model), "-o", str(out)], work, entry="onnxforge.fuzz.selfcheck:_misbehave")
            problems = check_run("compile", res, out_dir, [out])
            if _digest_folder(in_dir) != before:
                problems.append(Problem("input-modified", "compile", "changed"))
            kinds = {p.kind for p in problems}
            ok = expected in kinds if expected else not kinds
            good &= ok
            log(f"  self-check {how:<13} {'ok' if ok else 'MISSED'}: {sorted(kinds) or 'clean'}")
    return good
