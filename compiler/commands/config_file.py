"""``onnxforge compile --config FILE.toml``: every compile flag as a TOML key.

The keys are derived from the argparse definitions of ``compile`` (the long flag without its
dashes: ``--min-cosine`` is ``min-cosine``), so a new flag is a new key without anything to
keep in sync; :data:`NOT_IN_CONFIG` lists the few flags that are about one invocation rather
than the pipeline, with the reason. Values have the flag's type: ``true``/``false`` for switches,
numbers for numeric flags, strings (checked against the flag's choices), arrays of strings for
repeatable flags; ``passes`` also takes an array of pass names, and per-pass options are a table
per pass::

    pipeline = "int8"
    target = "cpu"
    calibration = "samples.npz"
    min-cosine = 0.995
    disable = ["cse"]

    [option.constant-folding]
    size_limit = 1048576

Flags given on the command line override the file (``--option`` entries are merged key by key,
the command line's winning); repeatable flags given on the command line replace the file's list.
An unknown key or a value of the wrong type is a one-line usage error naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there only)
    import tomli as tomllib

from onnxforge.errors import UsageError
from onnxforge.passes import get_pass

#: compile flags without a config key, and why.
NOT_IN_CONFIG: dict[str, str] = {
    "help": "prints the help",
    "config": "a config file does not include another",
    "model": "the input model is given on the command line, so one file serves many models",
    "verbose": "how much this run logs, not what it compiles (-v on the command line)",
    "quiet": "how much this run prints, not what it compiles (-q on the command line)",
}

#: The key of per-pass options: a table of tables, ``[option.PASS] NAME = VALUE``.
OPTION_KEY = "option"
#: Keys that take a comma-separated string on the command line and also an array in the file.
_LIST_OR_COMMAS = ("passes",)

_MARKED: dict[type, type] = {}


def mark_explicit(parser: argparse.ArgumentParser) -> None:
    """Make every action of ``parser`` record its ``dest`` in ``namespace.cli_given`` when the
    flag appears on the command line, so the file never overrides a flag given explicitly, even
    one given with its default value."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        action.__class__ = _marked(type(action))


def _marked(cls: type) -> type:
    if cls not in _MARKED:

        def __call__(self: Any, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
            cls.__call__(self, parser, namespace, values, option_string)
            namespace.cli_given = {*getattr(namespace, "cli_given", ()), self.dest}

        _MARKED[cls] = type(f"Explicit{cls.__name__}", (cls,), {"__call__": __call__})
    return _MARKED[cls]


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The config file's keys for ``parser``'s flags (long name without dashes), in the order
    ``--help`` lists the flags."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        key = key_of(action)
        if key is not None and key not in NOT_IN_CONFIG:
            out[key] = action
    return out


def key_of(action: argparse.Action) -> str | None:
    """The key ``action`` would have: its first long flag without dashes, its dest for a
    positional argument."""
    if not action.option_strings:
        return action.dest
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0][2:] if longs else None


def describe_type(action: argparse.Action) -> str:
    """The TOML type a key takes, for the docs and error messages."""
    if action.dest == OPTION_KEY:
        return "table of tables"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "boolean"
    if isinstance(action, argparse._AppendAction):
        return "array of strings"
    if isinstance(action, argparse._CountAction) or action.type is int:
        return "integer"
    if action.type is float:
        return "number"
    if action.dest in _LIST_OR_COMMAS:
        return "string or array of strings"
    return "string"


def _toml_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _bad_type(where: str, key: str, action: argparse.Action, value: Any) -> UsageError:
    kind = describe_type(action)
    article = "an" if kind[0] in "aeiou" else "a"
    return UsageError(f"{where}: {key!r} must be {article} {kind}, got {_toml_name(value)} {value!r}")


def _convert(where: str, key: str, action: argparse.Action, value: Any) -> Any:
    """The value argparse would have stored for the flag, from the file's value."""
    kind = describe_type(action)
    if kind == "boolean":  # true: as if the flag were given (a store_false flag stores False)
        if not isinstance(value, bool):
            raise _bad_type(where, key, action, value)
        return action.const if value else action.default
    if kind == "array of strings":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad_type(where, key, action, value)
        items = [_typed(where, key, action, v) for v in value]
        for item in items:
            _check_choice(where, key, action, item)
        return items
    if kind == "string or array of strings":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ",".join(value)
        if not isinstance(value, str):
            raise _bad_type(where, key, action, value)
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad_type(where, key, action, value)
        out: Any = value
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad_type(where, key, action, value)
        out = float(value)
    else:
        if not isinstance(value, str):
            raise _bad_type(where, key, action, value)
        out = _typed(where, key, action, value)
    _check_choice(where, key, action, out)
    return out


def _typed(where: str, key: str, action: argparse.Action, text: str) -> Any:
    if not callable(action.type):
        return text
    try:
        return action.type(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"{where}: {key!r}: {e}") from None


def _check_choice(where: str, key: str, action: argparse.Action, value: Any) -> None:
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where}: {key!r} must be one of {', '.join(map(str, action.choices))}, got {value!r}")


def _option_items(where: str, value: Any) -> list[str]:
    """``[option.PASS] NAME = VALUE`` tables as ``PASS.NAME=VALUE`` items, each checked against
    the pass's options class (unknown pass, unknown option, wrong type)."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise UsageError(f"{where}: {OPTION_KEY!r} must be a table of tables: [option.PASS] NAME = VALUE")
    items = []
    for pass_name, opts in value.items():
        try:
            cls = get_pass(pass_name)
        except UsageError as e:
            raise UsageError(f"{where}: [option.{pass_name}]: {e}") from None
        known = [f.name for f in dataclasses.fields(cls.Options)]
        for name, raw in opts.items():
            path = f"option.{pass_name}.{name}"
            if name not in known:
                raise UsageError(f"{where}: unknown key {path!r} (options of {pass_name}: {', '.join(known) or 'none'})")
            if isinstance(raw, (dict, list)) and not (isinstance(raw, list) and all(not isinstance(x, (dict, list)) for x in raw)):
                raise UsageError(f"{where}: {path!r} must be a value or an array of values, got {_toml_name(raw)}")
            text = _option_text(raw)
            try:
                cls.Options.parse_value(name, text)
            except ValueError as e:
                raise UsageError(f"{where}: {path!r}: {e}") from None
            items.append(f"{pass_name}.{name}={text}")
    return items


def _option_text(value: Any) -> str:
    """A TOML value as the text ``--option`` would give (each options class parses its own)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_option_text(v) for v in value)
    return str(value)


def read_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings by argparse ``dest``, converted and checked (:class:`UsageError`,
    one line, for an unreadable file, bad TOML, an unknown key or a wrong type)."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read config {where}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where}: invalid TOML: {' '.join(str(e).split())}") from None
    keys = config_keys(parser)
    out: dict[str, Any] = {}
    for key, value in data.items():
        action = keys.get(key)
        if action is None:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            why = f": {NOT_IN_CONFIG[key]}" if key in NOT_IN_CONFIG else ""
            raise UsageError(f"{where}: unknown key {key!r}{hint}{why}; valid keys: {', '.join(keys)}")
        if action.dest == OPTION_KEY:
            out[action.dest] = _option_items(where, value)
        else:
            out[action.dest] = _convert(where, key, action, value)
    return out


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``args`` with the settings of ``args.config`` for every flag not given on the command
    line; ``--option`` items are merged (the command line's win). ``args.given`` (flags whose
    value the user chose) gains the file's keys."""
    if not getattr(args, "config", None):
        return args
    settings = read_config(args.config, parser)
    given: set[str] = set(getattr(args, "cli_given", ()))
    for dest, value in settings.items():
        if dest == OPTION_KEY:
            setattr(args, dest, [*value, *getattr(args, dest, [])])
        elif dest not in given:
            setattr(args, dest, value)
    args.given = {*getattr(args, "given", ()), *settings}
    return args


def config_reference(parser: argparse.ArgumentParser) -> list[tuple[str, str, str, str]]:
    """(key, TOML type, default, help) of every key, for the user guide."""
    rows = []
    for key, action in config_keys(parser).items():
        default = action.default
        shown = "" if default is None or default == [] or default is False else repr(default).replace("'", '"')
        rows.append((key, describe_type(action), shown, " ".join((action.help or "").split())))
    return rows

