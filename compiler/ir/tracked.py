"""Containers that report their own mutations.

The IR's ``version`` counter is what the analysis cache and the pass context's "modified" check
rely on, so every edit must bump it. Plain ``dict``/``list`` attributes let a pass change the
model without anyone noticing; these subclasses call an ``on_change`` callback on every
mutating method instead, so passes never bump the version by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


def _noop() -> None:
    pass


class TrackedDict(dict[K, V]):
    """A dict that calls ``on_change()`` after every mutation."""

    __slots__ = ("_on_change",)

    def __init__(self, data: Iterable[tuple[K, V]] | dict[K, V] = (), on_change: Callable[[], None] = _noop) -> None:
        super().__init__(data)
        self._on_change = on_change

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self._on_change()

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._on_change()

    def pop(self, key: K, *default: Any) -> Any:  # type: ignore[override]
        had = key in self
        out = super().pop(key, *default)
        if had:
            self._on_change()
        return out

    def popitem(self) -> tuple[K, V]:
        out = super().popitem()
        self._on_change()
        return out

    def setdefault(self, key: K, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._on_change()

    def clear(self) -> None:
        had = bool(self)
        super().clear()
        if had:
            self._on_change()

    def __ior__(self, other: Any) -> TrackedDict[K, V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedDict[K, V]:
        out: TrackedDict[K, V] = type(self)(on_change=_noop)
        memo[id(self)] = out
        out._on_change = copy.deepcopy(self._on_change, memo)
        dict.update(out, ((copy.deepcopy(k, memo), copy.deepcopy(v, memo)) for k, v in self.items()))
        return out


class TrackedList(list[T]):
    """A list that calls ``on_change()`` after every mutation."""

    __slots__ = ("_on_change",)

    def __init__(self, data: Iterable[T] = (), on_change: Callable[[], None] = _noop) -> None:
        super().__init__(data)
        self._on_change = on_change

    def _changed(self) -> None:
        self._on_change()

    def append(self, item: T) -> None:
        super().append(item)
        self._changed()

    def extend(self, items: Iterable[T]) -> None:
        super().extend(items)
        self._changed()

    def insert(self, index: SupportsIndex, item: T) -> None:
        super().insert(index, item)
        self._changed()

    def remove(self, item: T) -> None:
        super().remove(item)
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> T:
        out = super().pop(index)
        self._changed()
        return out

    def clear(self) -> None:
        had = bool(self)
        super().clear()
        if had:
            self._changed()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        super().reverse()
        self._changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, other: Iterable[T]) -> TrackedList[T]:  # type: ignore[override,misc]
        self.extend(other)
        return self

    def __imul__(self, n: SupportsIndex) -> TrackedList[T]:  # type: ignore[override,misc]
        super().__imul__(n)
        self._changed()
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedList[T]:
        out: TrackedList[T] = type(self)(on_change=_noop)
        memo[id(self)] = out
        out._on_change = copy.deepcopy(self._on_change, memo)
        list.extend(out, (copy.deepcopy(x, memo) for x in self))
        return out
