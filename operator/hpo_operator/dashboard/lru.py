"""A cache for what requests ask for, bounded: least recently used first out, by a count of
entries and (optionally) a total size, each entry optionally with an expiry.

Whatever is keyed by request input (a figure's query string, a user's access to a namespace, a
token's review, a session) lives in one of these: distinct requests can cost at most the bound,
never memory that grows with the requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `max_entries` entries and `max_bytes` of `size(value)` in all; an entry put with a
    `ttl` (or the cache's default) is gone once that many seconds of `clock` have passed."""

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int | None = None,
        size: Callable[[Any], int] = len,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries, self.max_bytes, self.size, self.ttl, self.clock = max_entries, max_bytes, size, ttl, clock
        self._items: OrderedDict[K, tuple[V, float | None, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires, _ = item
        if expires is not None and self.clock() >= expires:
            self.pop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V, *, ttl: float | None = None, expires: float | None = None) -> None:
        """Stores `value` (replacing the key's), evicting the least recently used past the bounds.
        A value larger than max_bytes by itself is not stored (and the key's old value goes)."""
        self.pop(key)
        nbytes = self.size(value) if self.max_bytes is not None else 0
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return
        ttl = self.ttl if ttl is None else ttl
        if expires is None and ttl is not None:
            expires = self.clock() + ttl
        self._items[key] = (value, expires, nbytes)
        self.bytes += nbytes
        while len(self._items) > self.max_entries or (self.max_bytes is not None and self.bytes > self.max_bytes):
            _, (_, _, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[2]
        return item[0]

    def drop_if(self, predicate: Callable[[K], bool]) -> None:
        for key in [k for k in self._items if predicate(k)]:
            self.pop(key)
