"""The ``onnxforge`` command line.

Exit codes: 0 success, 1 model error (unreadable or invalid model, failed verification, failing
pass), 2 usage error (bad arguments, missing input, unwritable output). Errors are one line on
stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import typing
from collections.abc import Sequence

from onnxforge import __version__
from onnxforge.commands import COMMANDS
from onnxforge.errors import OnnxForgeError

log = logging.getLogger("onnxforge")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse prints usage + exits 2
        self.print_usage(sys.stderr)
        self.exit(2, f"onnxforge: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxforge", description="ONNX graph-rewriting compiler.")
    parser.add_argument("--version", action="version", version=f"onnxforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def one_line(text: str) -> str:
    """``text`` with control characters escaped: a model's names and op types are arbitrary
    strings, and one holding a newline must not split an error or a log line in two."""
    return text.translate(_CONTROL)


class _OneLineFormatter(logging.Formatter):
    """``LEVEL name: message`` with the message on one line (a traceback logged with it follows)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {one_line(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("onnxforge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose, args.quiet)
    handlers = {command.NAME: command.run for command in COMMANDS}
    try:
        return handlers[args.command](args)
    except OnnxForgeError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"onnxforge: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("onnxforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print("onnxforge: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line unless -v
        if args.verbose:
            traceback.print_exc()
        msg = " ".join(str(e).split())[:300]
        print(f"onnxforge: internal error: {type(e).__name__}: {msg} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
