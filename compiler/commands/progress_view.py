"""Progress bars on the terminal (rich) for the library's progress events.

The library reports :class:`~onnxforge.progress.ProgressEvent` objects and never writes to the
terminal; this is the one place that draws them. Bars are drawn only when stderr is a terminal,
never under CI (the ``CI`` environment variable set, as every CI service sets it), never with
``-q``, and ``ONNXFORGE_PROGRESS=off`` turns them off. Loading and the passes get bars only for
models of :data:`BIG_MODEL_BYTES` or more (a small model compiles before a bar would be read;
``ONNXFORGE_PROGRESS=all`` shows them for every model); calibration, the sensitivity ranking and
the budget loop of the lossy passes get one for every model, since they run the model many times.

While bars are drawn, the log's stderr handler writes through rich, so warnings appear above the
bars instead of breaking them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from onnxforge.progress import ProgressEvent

#: Models at least this large (model file plus external data) get load and pass bars.
BIG_MODEL_BYTES = 100 * 1024 * 1024
#: Stages drawn only for big models.
SIZE_GATED = ("load", "passes", "save")


def progress_wanted(quiet: bool, stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether bars may be drawn on ``stream`` (default stderr) at all."""
    env = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    if quiet or env.get("CI") or env.get("ONNXFORGE_PROGRESS", "").lower() in ("off", "0", "no", "false"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class ProgressView:
    """A :data:`~onnxforge.progress.ProgressHook` that draws rich bars, one line per stage.

    Use it as a context manager around the work; outside a terminal (or with ``enabled=False``)
    every event is ignored and nothing is written. ``model_bytes`` decides whether the load and
    pass stages are shown (:data:`BIG_MODEL_BYTES`); it may be set once the size is known."""

    def __init__(
        self,
        *,
        enabled: bool,
        model_bytes: int = 0,
        min_bytes: int | None = None,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.enabled = enabled
        self.model_bytes = model_bytes
        everything = env.get("ONNXFORGE_PROGRESS", "").lower() in ("all", "always")
        self.min_bytes = 0 if everything else (BIG_MODEL_BYTES if min_bytes is None else min_bytes)
        self.console = Console(file=stream if stream is not None else sys.stderr, force_terminal=enabled or None)
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.live = False
        self._log_streams: list[tuple[logging.StreamHandler, TextIO]] = []  # type: ignore[type-arg]

    def shows(self, stage: str) -> bool:
        return self.enabled and (stage not in SIZE_GATED or self.model_bytes >= self.min_bytes)

    def __call__(self, event: ProgressEvent) -> None:
        if not self.shows(event.stage):
            return
        if not self.live:
            self._start()
        count = f"{event.done}/{event.total} {event.unit}" if event.total else f"{event.done} {event.unit}" if event.done else ""
        # node and file names are arbitrary text: no control characters, no rich markup
        label = escape("".join(ch if ch.isprintable() else "?" for ch in event.label))
        task = self.tasks.get(event.stage)
        if task is None:
            task = self.bars.add_task(label, total=event.total, completed=event.done, count=count)
            self.tasks[event.stage] = task
        else:
            self.bars.update(task, description=label, total=event.total, completed=event.done, count=count)
        if event.finished:
            if event.total is None:
                self.bars.update(task, total=max(event.done, 1), completed=max(event.done, 1))
            self.bars.stop_task(task)
            del self.tasks[event.stage]  # the stage's next task gets a line of its own

    def _start(self) -> None:
        self.bars.start()
        self.live = True
        # log records written while the bars are drawn go through rich, above the bars
        for handler in logging.getLogger("onnxforge").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                self._log_streams.append((handler, handler.stream))
                handler.setStream(_ConsoleWriter(self.console))  # type: ignore[arg-type]

    def close(self) -> None:
        if self.live:
            self.bars.stop()
            self.live = False
        for handler, stream in self._log_streams:
            handler.setStream(stream)
        self._log_streams.clear()

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _ConsoleWriter:
    """A text stream that prints whole lines through a rich console (above its live bars)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.console.print(self.pending, markup=False, highlight=False, soft_wrap=True)
            self.pending = ""
