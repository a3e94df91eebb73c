"""What the published lists are: lists out, freshness, catalogue coverage and cold-start share.

:class:`RecentLists` keeps the last ``settings.web.recent_lists`` lists this worker
published, with a reference count per item, so each publish costs O(list length)
(the list coming in, the one falling out) and coverage is a ``len`` away.

A list is *cold-start* when no item in it owes anything to a personal signal:
every item's ``sources`` (``streams/ranking/recommend.py``: weight x normalised
score per source) is zero for ``ann`` (similarity to the user's taste vector) and
for ``cooc`` (co-occurrence with the user's history), so only the fallbacks, fresh
uploads and trending items, placed it. An empty list counts as cold-start: nothing
personal was served.

Coverage and cold-start share are computed when the registry is collected
(``Gauge.set_function``), not on every publish.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from streams.web.metrics import COLD_START, COVERAGE, FRESHNESS, LISTS_OUT, children

PERSONAL_SOURCES = ("ann", "cooc")


def is_personal(items: Iterable) -> bool:
    """Does any item of the list come from a personal source (see the module's docstring)?"""
    for item in items:
        sources = item.sources
        if sources.get("ann", 0.0) > 0.0 or sources.get("cooc", 0.0) > 0.0:
            return True
    return False


class RecentLists:
    """The last ``size`` lists: distinct items among them and how many were cold-start."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"recent lists: size must be >= 1, got {size} (settings.web.recent_lists)")
        self.size = size
        self._lists: deque[tuple[Sequence[str], bool]] = deque()
        self._refs: dict[str, int] = {}  # item -> how many of the recent lists hold it
        self._cold = 0

    def add(self, item_ids: Sequence[str], personal: bool) -> None:
        refs = self._refs
        if len(self._lists) == self.size:
            old, old_personal = self._lists.popleft()
            self._cold -= not old_personal
            for i in old:
                n = refs[i] - 1
                if n:
                    refs[i] = n
                else:
                    del refs[i]
        self._lists.append((item_ids, personal))
        self._cold += not personal
        for i in item_ids:
            refs[i] = refs.get(i, 0) + 1

    def __len__(self) -> int:
        return len(self._lists)

    @property
    def distinct_items(self) -> int:
        return len(self._refs)

    def coverage(self, catalogue_size: int) -> float:
        """Distinct items in the recent lists over the catalogue's size, in [0, 1] (0 for an empty catalogue).

        Capped at 1: a list can name an item the catalogue count does not know yet (its
        upload applied to Milvus but not yet to this worker's item replica)."""
        if catalogue_size <= 0:
            return 0.0
        return min(1.0, len(self._refs) / catalogue_size)

    def cold_start_ratio(self) -> float:
        return self._cold / len(self._lists) if self._lists else 0.0


class CatalogueSize:
    """The number of items in the catalogue, recomputed at most every ``every_s`` seconds.

    Source: the worker's item replica (``ctx.store``, streams/items/store.py), which every
    worker holds in memory and keeps current from the item-deltas log: the uploads it has
    applied (``meta``) minus those taken down. No Milvus round trip per scrape, the same
    count on every worker, and no count of rows a bench loaded around the stream.
    Counting the takedowns among the uploads is O(takedowns), hence the cache.
    """

    def __init__(self, store, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.every_s = every_s
        self._clock = clock
        self._at = -math.inf
        self._size = 0

    def __call__(self) -> int:
        now = self._clock()
        if now - self._at >= self.every_s:
            meta, down = self.store.meta, self.store.down
            self._size = len(meta) - sum(1 for i in down if i in meta)
            self._at = now
        return self._size


class ListMetrics:
    """What :meth:`streams.services.recommender.Recommender.publish` records for each list it sends."""

    def __init__(self, recent: RecentLists) -> None:
        self.recent = recent
        self._lists_out = children(LISTS_OUT)
        self._catalogue: Callable[[], int] = lambda: 0

    def export(self) -> ListMetrics:
        """Make the coverage and cold-start gauges read this object (at each collection)."""
        COVERAGE.set_function(lambda: self.recent.coverage(self._catalogue()))
        COLD_START.set_function(self.recent.cold_start_ratio)
        return self

    def count_catalogue_with(self, size: Callable[[], int]) -> None:
        self._catalogue = size

    def published(self, topic: str, items: Sequence, event_ts: float, produced_at: float) -> None:
        """One list sent to ``topic``: ``items`` are RecommendedItem (with ``sources``), ``event_ts`` the time of
        the event that triggered it (unix s; freshness is left out when it is not a real time)."""
        self._lists_out(topic).inc()
        # A real event time is a finite positive number; a clock ahead of ours counts as no delay.
        if 0.0 < event_ts < math.inf:
            FRESHNESS.observe(max(0.0, produced_at - event_ts))
        self.recent.add([r.item_id for r in items], is_personal(items))


_lists: ListMetrics | None = None


def list_metrics(recent_lists: int) -> ListMetrics:
    """The process's one :class:`ListMetrics`, over ``recent_lists`` lists (``settings.web.recent_lists``, fixed
    for a worker's life): coverage and cold-start share are per worker process, whoever publishes."""
    global _lists
    if _lists is None:
        _lists = ListMetrics(RecentLists(recent_lists)).export()
    return _lists
