"""Bounded caches and :func:`clear_caches`: no process-wide state that grows or hides.

Every cache lionk keeps (recorded steps, kernel builds, ``torch.compile`` functions, dtype facts)
is a :class:`BoundedCache`: a least-recently-used map with a maximum size, registered here so that
:func:`lionk.clear_caches` empties all of them at once. Other resources that outlive a step (the
NumPy thread pool) register a hook that :func:`clear_caches` calls. Nothing here changes which
path an optimizer takes: that choice, and any fallback, is per optimizer
(``opt.execution_report()``).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["BoundedCache", "clear_caches", "register_clear_hook", "caches"]

V = TypeVar("V")

_MISSING = object()
_REGISTRY: weakref.WeakSet[BoundedCache[Any]] = weakref.WeakSet()
_HOOKS: list[Callable[[], None]] = []
_LOCK = threading.Lock()


class BoundedCache(Generic[V]):
    """A thread-safe least-recently-used map of at most ``maxsize`` entries.

    ``get(key)`` returns the value or None (and marks it recently used); ``put(key, value)``
    stores it, dropping the least recently used entry when full. Registered under ``name`` for
    :func:`clear_caches` and :func:`caches`.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize: expected an int >= 1; received {maxsize!r}")
        self.name = name
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        with _LOCK:
            _REGISTRY.add(self)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                return None
            self._data.move_to_end(key)
            return value  # type: ignore[return-value]

    def lookup(self, key: Hashable) -> V | None:
        """The value or None, without the lock and without marking the entry recently used:
        for caches read on every step (a few hundred ns cheaper than :meth:`get`). A dict read
        is atomic under the GIL. Entries read only through ``lookup`` are dropped in the order
        they were stored when the cache is full (then stored again at their next miss)."""
        return self._data.get(key)

    def put(self, key: Hashable, value: V) -> V:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """The cached value, or ``make()`` stored and returned (``make`` runs outside the lock;
        two threads may both make it, the last one is kept)."""
        value = self.get(key)
        if value is None:
            value = self.put(key, make())
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"BoundedCache({self.name!r}, {len(self)}/{self.maxsize})"


def register_clear_hook(hook: Callable[[], None]) -> None:
    """Call ``hook()`` from :func:`clear_caches` (e.g. to shut a thread pool down)."""
    with _LOCK:
        if hook not in _HOOKS:
            _HOOKS.append(hook)


def clear_caches() -> None:
    """Empty every cache lionk keeps and release what they hold (recorded steps, compiled
    kernels, ``torch.compile`` functions, the NumPy thread pool). The next step records and
    builds again (kernels on disk, e.g. numba's cache, stay). Safe to call at any time between
    steps; optimizers keep their state and their execution reports."""
    with _LOCK:
        registry, hooks = list(_REGISTRY), list(_HOOKS)
    for cache in registry:
        cache.clear()
    for hook in hooks:
        hook()


def caches() -> dict[str, tuple[int, int]]:
    """``{name: (entries, maxsize)}`` of every registered cache (for inspection and tests)."""
    with _LOCK:
        return {c.name: (len(c), c.maxsize) for c in _REGISTRY}
