"""What counts as a defect: a run's exit, signal, stderr and files classified into problems
(see :mod:`onnxforge.fuzz`), and the notes that are not defects but are worth counting."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxforge.fuzz.children import RunResult

_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
#: onnxruntime's own log lines: ``<colour>2026-01-01 10:00:00.1 [E:onnxruntime:, file.cc:12 Function] ...``
_ORT_LOG = re.compile(r"\[([EWIVF]):onnxruntime:[^,\]]*,\s*([\w.]+):\d+ ([^\]]+)\]")
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')


@dataclass(frozen=True)
class Problem:
    kind: str  # hang, signal, traceback, internal-error, exit-code, output-on-failure, ...
    command: str  # compile or analyze
    detail: str

    @property
    def signature(self) -> str:
        return f"{self.kind} [{self.command}] {self.detail}"


def _normalize(text: str) -> str:
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'*'", text)
    text = re.sub(r"(/[\w.+-]+)+", "<path>", text)
    text = re.sub(r"\d+", "N", text)
    return " ".join(text.split())[:200]


def _traceback_site(stderr: str) -> str:
    """``ExcType: message at file:function`` of the last traceback in ``stderr``."""
    lines = stderr.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)"))
    frames = [m.groups() for m in map(_FRAME.match, lines[start:]) if m]
    ours = [f for f in frames if "onnxforge" in f[0] or "/work/" in f[0]] or frames
    site = ""
    if ours:
        path, func = ours[-1]
        site = f" at {'/'.join(Path(path).parts[-2:])}:{func}"
    exc = next((ln for ln in reversed(lines[start:]) if ln and not ln.startswith(" ")), "?")
    return _normalize(exc) + site


def check_run(command: str, res: RunResult, out_dir: Path | None, produced: Sequence[Path]) -> list[Problem]:
    """The defects one run shows (see the module docstring). ``out_dir``: the folder the run
    could write to; ``produced``: the files a successful compile must have written."""
    problems: list[Problem] = []

    def add(kind: str, detail: str) -> None:
        problems.append(Problem(kind, command, detail))

    if res.timed_out:
        add("hang", f"no exit within {res.seconds:.0f} s")
        return problems
    if res.signal is not None:
        try:
            name = signal.Signals(res.signal).name
        except ValueError:
            name = str(res.signal)
        where = re.search(r'most recent call first\):\n\s*File "([^"]+)", line \d+ in (\S+)', res.stderr)
        site = f" in {'/'.join(Path(where[1]).parts[-2:])}:{where[2]}" if where else ""
        add("signal", f"killed by {name}{site}")
    elif "Traceback (most recent call last)" in res.stderr:
        add("traceback", _traceback_site(res.stderr))
    elif "Fatal Python error" in res.stderr:
        add("traceback", "fatal Python error " + _normalize(res.stderr.split("Fatal Python error", 1)[1].split("\n")[0]))
    internal = [ln for ln in res.stderr.splitlines() if "internal error" in ln]
    if internal:
        add("internal-error", _normalize(internal[0].split("internal error:", 1)[-1].split("(run with -v")[0]))
    if res.rc is not None and res.rc not in (0, 1, 2):
        add("exit-code", f"exit code {res.rc}")
    leftovers = sorted(p.name for p in out_dir.iterdir()) if out_dir is not None and out_dir.is_dir() else []
    if res.rc != 0:
        if leftovers:
            add("output-on-failure", f"files left after exit {res.rc}: {', '.join(_normalize(n) for n in leftovers[:3])}")
        if res.rc in (1, 2) and not problems:
            rest = [ln for ln in res.stderr.splitlines() if ln.strip() and not _LOG_LINE.match(ln)]
            ort = _ORT_LOG.search(res.stderr)
            if ort:
                add("messy-error", f"onnxruntime log line before the error ({ort[1]}: {ort[2]} {ort[3]})")
            elif len(rest) != 1 or not rest[0].startswith("onnxforge: error:"):
                first = rest[0] if rest else "(nothing)"
                add("messy-error", f"{len(rest)} error lines, first: {_normalize(first)}")
            elif len(rest[0]) > 1000:
                add("messy-error", f"error line of {len(rest[0])} characters")
        return problems
    expected = {p.name for p in produced}
    extra = [n for n in leftovers if n not in expected and not n.endswith(".data")]
    if extra:
        add("leftover-files", f"unexpected files after success: {', '.join(_normalize(n) for n in extra[:3])}")
    for p in produced:
        if not p.is_file():
            add("bad-output", f"exit 0 but {p.name} was not written")
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            else:
                onnx.checker.check_model(str(p), full_check=False)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            add("bad-output", f"{p.suffix} output does not load: {_normalize(first)}")
    return problems


#: Clean one-line failures that still hide a Python error in a pass or a swallowed step: not
#: defects by the rules above (the CLI reports them as designed), but counted and listed.
_NOTE = re.compile(r"(pass '[\w-]+' failed|WARNING [\w.]+: [^:]*failed[^:]*): (\w+(?:Error|Exception))\b")


def notes(res: RunResult) -> list[str]:
    found = {f"{m[1]}: {m[2]}" for m in _NOTE.finditer(res.stderr)}
    if res.rc == 0:
        found |= {f"onnxruntime log line on a success ({m[1]}: {m[2]} {m[3]})" for m in _ORT_LOG.finditer(res.stderr)}
    return sorted(found)
