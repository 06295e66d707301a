"""The subcommands of ``onnxforge``, one module each, in the order ``--help`` lists them.

A command module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
(the exit code); errors are raised as :class:`~onnxforge.errors.OnnxForgeError` and turned into
one line by :func:`onnxforge.cli.main`. Add a command by writing its module and listing it here.
"""

from __future__ import annotations

from onnxforge.commands import analyze, bench, compile, diff, list_passes, lower, pack, tune, unpack

#: Every subcommand, explicitly.
COMMANDS = (compile, analyze, diff, bench, tune, lower, pack, unpack, list_passes)

__all__ = ["COMMANDS"]
