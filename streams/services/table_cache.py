"""A read-through, write-through LRU in front of a Faust table.

The co-occurrence rows of a user's history are read for every list the worker
ranks; from the table each read is a RocksDB lookup plus a JSON decode (~10% of
the interaction worker's CPU, py-spy). Rows are read far more often than they
change, so recently used values are kept decoded here:

* writes and deletes go to the table (changelog and all) *and* the cache, so
  this worker's read-modify-write updates always see their own last write;
* a cached value is re-read from the table after ``ttl_s``, which bounds how
  stale another worker's updates (arriving through the changelog) can look.

Values handed out are shared: callers must copy before changing them (the
co-occurrence store always does).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

_MISSING = object()


class CachedTable(MutableMapping):
    """See the module docstring; ``max_items`` bounds memory, ``ttl_s`` staleness."""

    def __init__(self, table: MutableMapping, max_items: int = 100_000, ttl_s: float = 2.0) -> None:
        self._table = table
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._cache: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def _lookup(self, key: Any) -> Any:
        # Hot path (thousands of calls per ranked list): no LRU reordering on a hit.
        # Entries are ordered by when they were read or written, and every entry is
        # re-read within ttl_s anyway, so evicting the oldest read is near enough.
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = self._table.get(key, _MISSING)
        self._remember(key, value, now)
        return value

    def _remember(self, key: Any, value: Any, now: float) -> None:
        self._cache[key] = (now, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)

    def __getitem__(self, key: Any) -> Any:
        value = self._lookup(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not _MISSING

    def __setitem__(self, key: Any, value: Any) -> None:
        self._table[key] = value
        self._remember(key, value, time.monotonic())

    def __delitem__(self, key: Any) -> None:
        self._cache.pop(key, None)
        del self._table[key]

    def __iter__(self) -> Iterator:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
