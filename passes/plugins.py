"""Third-party passes from the Python entry-point group ``onnxforge.passes``.

A distribution declares its passes in its ``pyproject.toml``::

    [project.entry-points."onnxforge.passes"]
    my-pass = "my_package.passes:MyPass"          # a Pass subclass
    my-family = "my_package.passes:all_passes"    # or a function returning Pass subclasses

Plugins are loaded once, lazily, the first time the registry is asked about a name it does not
know or for the whole list (``onnxforge passes``, ``--passes NAME``, ``--option NAME.x=...``),
never by ``import onnxforge``: a broken plugin cannot slow down or break commands that do not
consult the registry. A plugin that fails to import, raises, or gives something that is not a
usable pass is skipped with one warning line naming the entry point and the distribution; a
plugin pass whose name a built-in pass (or an earlier plugin) already has is skipped the same
way. Built-in passes always win.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from onnxforge.passmanager import CompositePass, Pass, PassOptions

log = logging.getLogger(__name__)

#: The entry-point group third-party passes are declared in.
GROUP = "onnxforge.passes"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class PluginState:
    """What loading the plugins gave: passes by name and, per entry point, why it was skipped."""

    passes: dict[str, type[Pass]] = field(default_factory=dict)
    #: Pass name -> the entry point that provided it (``"name = module:attr (dist)"``).
    sources: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


_state: PluginState | None = None


def _describe(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    owner = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{ep.name} = {ep.value}{owner}"


def _check_pass(obj: object) -> str | None:
    """Why ``obj`` is not a pass the registry can hold (None when it is)."""
    if not isinstance(obj, type) or not issubclass(obj, Pass):
        return f"{obj!r} is not a subclass of onnxforge.passmanager.Pass"
    cls = typing.cast("type[Pass]", obj)
    if issubclass(cls, CompositePass):
        return f"{cls.__name__} is a composite pass; register its leaf passes"
    if inspect.isabstract(cls) or cls.run is Pass.run:
        return f"{cls.__name__} does not implement run()"
    if not hasattr(cls, "lossless"):
        return f"{cls.__name__} must declare lossless = True or False"
    if cls.name == Pass.name or not _NAME.match(cls.name):
        return f"{cls.__name__} needs a name of lowercase letters, digits, '-', '_' or '.' (has {cls.name!r})"
    if not (inspect.isclass(cls.Options) and issubclass(cls.Options, PassOptions)):
        return f"{cls.__name__}.Options is not a PassOptions dataclass"
    return None


def _passes_of(loaded: object) -> list[object]:
    """The pass classes an entry point's object stands for: itself when it is a class, else what
    calling it returns (one class or an iterable of classes)."""
    if inspect.isclass(loaded):
        return [loaded]
    if not callable(loaded):
        raise TypeError(f"{loaded!r} is neither a Pass subclass nor a function returning passes")
    got = loaded()
    if inspect.isclass(got):
        return [got]
    if isinstance(got, Iterable) and not isinstance(got, (str, bytes, Mapping)):
        return list(got)
    raise TypeError(f"{getattr(loaded, '__name__', loaded)!r} returned {type(got).__name__}, not pass classes")


def load_plugins(builtin: Mapping[str, type[Pass]], *, refresh: bool = False) -> PluginState:
    """The plugin passes (loaded on the first call, then cached; ``refresh`` loads again, which
    tests use after changing ``sys.path``). ``builtin`` names cannot be taken by a plugin."""
    global _state
    if _state is not None and not refresh:
        return _state
    state = PluginState()
    try:
        eps = sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: (e.name, e.value))
    except Exception as e:  # a broken metadata folder on sys.path
        log.warning("could not read the %s entry points: %s: %s", GROUP, type(e).__name__, e)
        eps = []
    for ep in eps:
        where = _describe(ep)
        try:
            candidates = _passes_of(ep.load())
        except Exception as e:  # the plugin's own bug: skip it, never crash the command
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            state.errors[where] = reason
            log.warning("plugin %s skipped: %s", where, reason)
            continue
        for obj in candidates:
            why = _check_pass(obj)
            cls = typing.cast("type[Pass]", obj)
            if why is None and cls.name in builtin:
                why = f"pass name {cls.name!r} is a built-in pass"
            elif why is None and cls.name in state.passes:
                why = f"pass name {cls.name!r} is already provided by plugin {state.sources[cls.name]}"
            if why is not None:
                state.errors[where] = why
                log.warning("plugin %s skipped: %s", where, why)
                continue
            state.passes[cls.name] = cls
            state.sources[cls.name] = where
            log.debug("plugin pass %s from %s", cls.name, where)
    _state = state
    return state
