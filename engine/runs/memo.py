"""A small keyed memo: the last few values by key, each made once even when asked for at once."""

from __future__ import annotations

import collections
import threading
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class LruMemo(Generic[V]):
    """Values by key, the `size` most recently used kept. `get(key, make)` returns the kept
    value or calls `make()` once: a second caller with the same key waits for the first
    (other keys do not wait). `size` may be changed at any time (at least 1 is kept)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: collections.OrderedDict[Hashable, V] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    return self._values[key]
            value = make()
            with self._lock:
                self._values[key] = value
                while len(self._values) > max(1, self.size):
                    self._values.popitem(last=False)
            return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
