"""Exception types. The CLI maps them to exit codes: usage errors 2, model errors 1."""

from __future__ import annotations

from typing import Any


class OnnxForgeError(Exception):
    """Base class of every error onnxforge raises on purpose. ``str(err)`` is one line."""

    exit_code = 1


class UsageError(OnnxForgeError):
    """The request itself is wrong: bad option, unknown pass or pipeline, bad paths."""

    exit_code = 2


class ModelError(OnnxForgeError):
    """The model cannot be read or is invalid (truncated, cyclic, undefined inputs, ...)."""

    exit_code = 1


class UnsafeExternalDataError(ModelError):
    """External data points outside the model's folder or past the end of its file."""


class PassError(OnnxForgeError):
    """A pass failed. Names the pass and the passes that ran before it."""

    def __init__(self, pass_name: str, ran_before: list[str], cause: BaseException) -> None:
        self.pass_name = pass_name
        self.ran_before = list(ran_before)
        self.cause = cause
        before = ", ".join(ran_before[-5:]) if ran_before else "none"
        super().__init__(
            f"pass {pass_name!r} failed: {type(cause).__name__}: {_one_line(str(cause))} "
            f"(passes run before it: {before})"
        )


class VerificationError(OnnxForgeError):
    """The compiled model's outputs differ from the original's."""


class BudgetError(VerificationError):
    """A lossy pass cannot meet its accuracy budget even after backing off as far as it may.
    ``report`` is the pass's report, ``model`` the best model it found (the pass's
    ``allow_budget_miss`` option returns that model instead). The pass context passes it on
    as is: it is the pass's verdict on the user's budget, not a failure of the pass."""

    def __init__(self, message: str, report: Any = None, model: Any = None) -> None:
        super().__init__(message)
        self.report = report
        self.model = model


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
