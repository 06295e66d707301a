"""Progress reporting for long work (loading, passes, calibration), without any output.

Library code never writes to the terminal: it reports :class:`ProgressEvent` objects to a
:data:`ProgressHook`, a plain callable, and logs its messages through :mod:`logging`. The
command line renders the events (``onnxforge.commands.progress_view``, with rich); a library
user can pass any callable, e.g. one that updates a notebook widget::

    events = []
    onnxforge.compile("model.onnx", progress=events.append)

A :class:`Stage` is the reporting side of one task: ``stage(done, total)`` after each unit of
work (it is also the ``progress(done, total)`` callback calibration takes), ``stage.describe``
to change what the task says it is doing, ``stage.restart`` for the next task in the same
place, ``stage.close()`` when the task ends. A stage without a hook does nothing, so callers
never test for one.

Work deep inside a pass (the sensitivity ranking and the budget loop of the lossy passes) does
not get a hook passed down through every function: :func:`reporting` makes a hook the current
one for a block (a context variable, so threads and nested compilations keep their own), and
:func:`current_hook` reads it. ``compile()`` makes its ``progress`` hook current while the
pipeline runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class ProgressEvent:
    """One report on a task.

    ``stage`` identifies the task (``"load"``, ``"passes"``, ``"calibration"``, ...; a renderer
    keeps one display line per stage), ``label`` says what it is doing now, ``done`` of
    ``total`` units (``total`` None: unknown) counted in ``unit``; ``finished`` is set on the
    task's last event."""

    stage: str
    label: str
    done: int = 0
    total: int | None = None
    unit: str = ""
    finished: bool = False


#: What receives progress events. It must be quick and must not raise.
ProgressHook = Callable[[ProgressEvent], None]


class Stage:
    """Reports one task's progress to ``hook`` (nothing at all when ``hook`` is None)."""

    def __init__(
        self, hook: ProgressHook | None, stage: str, label: str, *, unit: str = "", total: int | None = None
    ) -> None:
        self.hook = hook
        self.stage = stage
        self.label = label
        self.unit = unit
        self.total = total
        self.done = 0
        self.closed = False

    def _emit(self, finished: bool = False) -> None:
        if self.hook is not None:
            self.hook(ProgressEvent(self.stage, self.label, self.done, self.total, self.unit, finished))

    def start(self) -> Stage:
        """Announce the task before its first unit of work."""
        self.closed = False
        self._emit()
        return self

    def __call__(self, done: int, total: int | None = None) -> None:
        """``done`` units of ``total`` (the total given at construction when None)."""
        self.done = done
        if total is not None:
            self.total = total
        self.closed = False
        self._emit()

    def describe(self, label: str) -> None:
        """Say what the task is doing now (same count)."""
        self.label = label
        self._emit()

    def step(self, done: int, label: str) -> None:
        """``done`` units finished and now doing ``label``."""
        self.label, self.done = label, done
        self._emit()

    def restart(self, label: str, unit: str = "batches", total: int | None = None) -> None:
        """End the current task and start the next one in the same stage."""
        self.close()
        self.label, self.unit, self.total, self.done = label, unit, total, 0
        self.start()

    def close(self) -> None:
        """End the task (its last event has ``finished`` set); a second close does nothing."""
        if not self.closed:
            self.closed = True
            self._emit(finished=True)

    def __enter__(self) -> Stage:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_current: ContextVar[ProgressHook | None] = ContextVar("onnxforge_progress_hook", default=None)


@contextmanager
def reporting(hook: ProgressHook | None) -> Iterator[None]:
    """Make ``hook`` the :func:`current_hook` inside the block (None: no reporting)."""
    token = _current.set(hook)
    try:
        yield
    finally:
        _current.reset(token)


def current_hook() -> ProgressHook | None:
    """The hook of the innermost :func:`reporting` block, None outside one."""
    return _current.get()
