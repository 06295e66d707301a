"""Running the command line in a child process with a timeout and a memory limit: a *zygote*
that has onnxforge, onnx and onnxruntime imported forks one child per run (warm), or a
fresh ``python -m onnxforge.cli`` per run (cold)."""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxforge.cli  # noqa: F401  (the zygote forks children with it imported)

GIB = 1 << 30


@dataclass
class RunResult:
    rc: int | None
    signal: int | None
    timed_out: bool
    seconds: float
    stdout: str = ""
    stderr: str = ""
    maxrss_kib: int = 0


def _limit(memory: int) -> None:
    """In the child: its own process group, bounded address space and file sizes, no core."""
    os.setpgid(0, 0)
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * GIB, 2 * GIB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _entry(spec: str) -> Callable[[list[str]], int]:
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)  # type: ignore[no-any-return]


def _child_main(entry: str, argv: list[str]) -> int:
    """What ``python -m onnxforge.cli ARGV`` does, in a forked child: exceptions that escape
    ``main`` print the interpreter's traceback and exit 1."""
    sys.argv = ["onnxforge", *argv]
    try:
        code = _entry(entry)(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    return int(code or 0) & 0xFF


def _zygote() -> None:
    """Serve run requests (JSON lines on stdin) by forking; replies on the original stdout."""
    proto_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed while importing goes to stderr, not into the protocol
    for line in sys.stdin:
        req = json.loads(line)
        if "preload" in req:
            for name in req["preload"]:
                if name in sys.modules or name.startswith(("_pytest", "pytest", "onnxforge.fuzz")):
                    continue
                try:
                    importlib.import_module(name)
                except BaseException:  # noqa: BLE001 - a module that cannot be preloaded is loaded later
                    pass
            proto_out.write(json.dumps({"ok": True}) + "\n")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                _limit(int(req["memory"]))
                os.chdir(req["cwd"])
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                code = _child_main(req["entry"], req["argv"])
                if req.get("modules"):
                    Path(req["modules"]).write_text("\n".join(sorted(sys.modules)))
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        reply = _wait(pid, float(req["timeout"]), start)
        proto_out.write(json.dumps(reply) + "\n")


def _wait(pid: int, timeout: float, start: float) -> dict[str, Any]:
    """Wait for ``pid`` (killing its process group at the timeout): rc, signal, rusage."""
    deadline = start + timeout
    pause = 0.001
    timed_out = False
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with _suppress():
                os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(pause)
        pause = min(pause * 1.5, 0.02)
    with _suppress():  # grandchildren of a killed or finished child
        os.killpg(pid, signal.SIGKILL)
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return {"rc": rc, "signal": None if timed_out else sig, "timed_out": timed_out,
            "seconds": time.monotonic() - start, "maxrss_kib": int(usage.ru_maxrss)}


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a crash in C code shows where (and is a defect anyway)
    env.pop("PYTHONSTARTUP", None)
    return env


class Runner:
    """Runs the CLI (or ``entry``) on an argv in a child with a timeout and a memory limit.
    ``warm``: children forked from a zygote that has everything imported; else a fresh
    ``python -m onnxforge.cli`` per run."""

    def __init__(self, *, warm: bool = True, timeout: float = 60.0, memory: int = 3 * GIB) -> None:
        self.warm = warm
        self.timeout = timeout
        self.memory = memory
        self._zygote: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        z, self._zygote = self._zygote, None
        if z is not None:
            with _suppress():
                z.stdin.close()  # type: ignore[union-attr]
            try:
                z.wait(timeout=5)
            except subprocess.TimeoutExpired:
                z.kill()
                z.wait()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", "from onnxforge.fuzz.children import _zygote; _zygote()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=_child_env(), bufsize=1,
            )
        return self._zygote

    def preload(self, modules: Sequence[str]) -> None:
        """Import ``modules`` in the zygote so that children need not."""
        if self.warm:
            z = self._start()
            z.stdin.write(json.dumps({"preload": list(modules)}) + "\n")  # type: ignore[union-attr]
            z.stdin.flush()  # type: ignore[union-attr]
            z.stdout.readline()  # type: ignore[union-attr]

    def run(self, argv: Sequence[str], cwd: Path, *, entry: str = "onnxforge.cli:main",
            timeout: float | None = None, modules: Path | None = None) -> RunResult:
        timeout = self.timeout if timeout is None else timeout
        out_path, err_path = cwd / ".fuzz-stdout", cwd / ".fuzz-stderr"
        if self.warm:
            reply = self._run_warm(list(argv), cwd, entry, timeout, out_path, err_path, modules)
        else:
            reply = self._run_cold(list(argv), cwd, entry, timeout, out_path, err_path)
        res = RunResult(reply["rc"], reply["signal"], reply["timed_out"], reply["seconds"],
                        maxrss_kib=reply.get("maxrss_kib", 0))
        for attr, p in (("stdout", out_path), ("stderr", err_path)):
            try:
                setattr(res, attr, p.read_bytes()[-200_000:].decode("utf-8", "replace"))
                p.unlink()
            except OSError:
                pass
        return res

    def _run_warm(self, argv: list[str], cwd: Path, entry: str, timeout: float, out_path: Path,
                  err_path: Path, modules: Path | None) -> dict[str, Any]:
        req = {"argv": argv, "cwd": str(cwd), "entry": entry, "timeout": timeout, "memory": self.memory,
               "stdout": str(out_path), "stderr": str(err_path), "modules": str(modules) if modules else ""}
        with self._lock:
            for _ in range(2):
                z = self._start()
                try:
                    z.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
                    z.stdin.flush()  # type: ignore[union-attr]
                    line = z.stdout.readline()  # type: ignore[union-attr]
                except (BrokenPipeError, OSError):
                    line = ""
                if line:
                    return json.loads(line)  # type: ignore[no-any-return]
                self.close()  # the zygote died (never the CLI's fault): start another
        return self._run_cold(argv, cwd, entry, timeout, out_path, err_path)

    def _run_cold(self, argv: list[str], cwd: Path, entry: str, timeout: float, out_path: Path,
                  err_path: Path) -> dict[str, Any]:
        if entry == "onnxforge.cli:main":
            cmd = [sys.executable, "-m", "onnxforge.cli", *argv]
        else:
            module, _, fn = entry.partition(":")
            code = f"import sys; from {module} import {fn} as f; sys.exit(f(sys.argv[1:]))"
            cmd = [sys.executable, "-c", code, *argv]
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=_child_env(), preexec_fn=lambda: _limit(self.memory))
            return _wait(proc.pid, timeout, start)
