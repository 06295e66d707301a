"""A progress bar for calibration, for the command line.

Library code never writes to the terminal: :func:`~onnxforge.calibration.collect.collect_ranges`
takes a ``progress(done, total)`` callback and logs through :mod:`logging`. The CLI passes a
:class:`ProgressBar`, which draws on stderr only when stderr is a terminal, or when asked
(``enabled=True``); on a non-terminal it writes a plain line every few seconds instead of
redrawing.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class ProgressBar:
    """``bar(done, total)`` after each batch; ``close()`` (or leaving ``with``) ends the line."""

    def __init__(
        self,
        label: str = "calibrating",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
        min_interval: float = 0.1,
        line_interval: float = 5.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = is_tty if enabled is None else enabled
        self.redraw = is_tty
        self.label = label
        self.unit = "batches"
        self.width = width
        self.interval = min_interval if is_tty else line_interval
        self.start = time.monotonic()
        self.last = -float("inf")
        self.drawn = False

    def __call__(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self.last < self.interval:
            return
        self.last = now
        text = self.render(done, total, now - self.start)
        if self.redraw:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.drawn = True

    def render(self, done: int, total: int | None, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        speed = f"{rate:.1f} {self.unit}/s" if rate else ""
        if total:
            frac = min(done / total, 1.0)
            filled = int(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            eta = f" eta {(total - done) / rate:.0f}s" if rate and done < total else ""
            return f"{self.label} [{bar}] {done}/{total} {frac:4.0%} {speed}{eta}".rstrip()
        return f"{self.label} {done} {self.unit} {speed}".rstrip()

    def restart(self, label: str, unit: str = "batches") -> None:
        """End the current line and count a new stage (``label``, counted in ``unit``)."""
        self.close()
        self.label, self.unit = label, unit
        self.start = time.monotonic()
        self.last = -float("inf")

    def close(self) -> None:
        if self.enabled and self.redraw and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
        self.drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
