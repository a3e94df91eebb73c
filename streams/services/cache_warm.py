"""Fill the item cache in the background when a worker starts.

A worker starts with an empty item cache, so for its first minutes most lists
wait for a Milvus ``get`` of their candidates' vectors: on the realistic
benchmark (docs/PERFORMANCE.md) that read took ~9-11 ms of a paced batch's
~20 ms search-and-fetch, on the lists' critical path, with 16-30 cold items a
batch a minute after start. A worker that has run for a while holds the items
its users touch; this makes a restarted one start closer to that:

1. the items the replica's state says are the most interacted-with (the
   co-occurrence popularity ``pops``), most popular first;
2. then the rest of the catalogue, in the collection's order;

until the cache holds ``fill`` of its bound (leaving room for what the lists
fetch meanwhile, so the warm-up never evicts what was just read). Each page is
one Milvus round trip in a thread; the rows are turned into cache entries on
the event loop a page at a time. A failure only ends the warm-up (logged): the
cache keeps filling on demand, as without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from streams.services.items import ItemCache

log = logging.getLogger(__name__)


def most_popular(pops: Mapping[str, float], n: int) -> list[str]:
    """The ``n`` items with the highest popularity, most popular first (ties by id)."""
    return [i for i, _ in sorted(pops.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


async def warm_item_cache(cache: ItemCache, popular: Iterable[str], fill: float = 0.9, page: int = 1000) -> int:
    """Read items into ``cache`` (see the module docstring); returns how many were added."""
    limit = int(fill * cache.max_items)
    t0 = time.perf_counter()
    added = 0
    popular = list(popular)
    for start in range(0, len(popular), page):
        if len(cache) >= limit:
            break
        chunk = [i for i in popular[start : start + page] if i not in cache]
        before = cache.invalidations
        rows = await asyncio.to_thread(cache.collection.get, chunk) if chunk else {}
        added += await _put(cache, list(rows.values()), before, limit)
    pages = cache.collection.scan_pages(page)
    try:
        while len(cache) < limit:
            before = cache.invalidations
            rows = await asyncio.to_thread(next, pages, None)
            if not rows:
                break
            added += await _put(cache, rows, before, limit)
    finally:
        await asyncio.to_thread(pages.close)  # closes the Milvus iterator (a round trip)
    log.info("item cache warmed: %d items added in %.1f s (%d cached, bound %d)", added,
             time.perf_counter() - t0, len(cache), cache.max_items)
    return added


async def _put(cache: ItemCache, rows: list[dict], before: int, limit: int, slice_rows: int = 100) -> int:
    """:meth:`ItemCache.put_rows` a slice at a time, letting the event loop run between slices (a page of
    1,000 rows at once held it for ~15 ms: a latency spike for every list in flight)."""
    added = 0
    for start in range(0, len(rows), slice_rows):
        added += cache.put_rows(rows[start : start + slice_rows], before, limit)
        await asyncio.sleep(0)
    return added


async def _warm_logged(cache: ItemCache, popular: list[str]) -> None:
    try:
        await warm_item_cache(cache, popular)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a background task: the cache still fills on demand
        log.warning("item cache warm-up stopped early (%d items cached); the cache fills on demand",
                    len(cache), exc_info=True)


def start_cache_warm(cache: ItemCache, pops: Mapping[str, float]) -> asyncio.Task:
    """Warm ``cache`` in a background task, the most popular of ``pops`` first."""
    popular = most_popular(pops, int(cache.max_items))
    return asyncio.get_running_loop().create_task(_warm_logged(cache, popular), name="item-cache-warm")
