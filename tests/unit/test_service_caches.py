"""The worker's in-memory views of its tables: write-through row cache and the takedown set."""

from __future__ import annotations

import time

import pytest

from streams.services.table_cache import CachedTable
from streams.services.takedowns import TakedownView


class CountingTable(dict):
    """A plain mapping that counts reads, standing in for the table store in these pure-logic tests."""

    reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_cached_table_reads_once_and_writes_through():
    table = CountingTable(a={"x": 1.0})
    cached = CachedTable(table, max_items=10, ttl_s=60)
    assert cached.get("a") == {"x": 1.0}
    assert cached["a"] == {"x": 1.0} and "a" in cached
    assert table.reads == 1  # later reads come from memory
    cached["a"] = {"x": 2.0}
    assert table["a"] == {"x": 2.0}  # the table (and its changelog) gets every write
    assert cached.get("a") == {"x": 2.0} and table.reads == 1  # own write visible without a re-read
    assert cached.get("missing") is None and "missing" not in cached
    with pytest.raises(KeyError):
        cached["missing"]
    del cached["a"]
    assert "a" not in table and cached.get("a") is None


def test_cached_table_rereads_after_ttl_and_evicts_least_recent():
    table = CountingTable(a=1, b=2, c=3)
    cached = CachedTable(table, max_items=2, ttl_s=0.05)
    cached.get("a")
    table["a"] = 10  # another worker's update arriving through the changelog
    assert cached.get("a") == 1  # within the TTL: the cached value
    time.sleep(0.06)
    assert cached.get("a") == 10  # after it: re-read
    cached.get("b"), cached.get("c")  # "a" is now least recent and evicted
    reads = table.reads
    cached.ttl_s = 60
    cached.get("a")
    assert table.reads == reads + 1
    assert len(cached) == 3 and set(cached) == {"a", "b", "c"}


def test_takedown_view_sees_local_takedowns_at_once_and_others_after_refresh():
    table = {"gone": {"reason": "x"}}
    view = TakedownView(table, refresh_s=60)
    assert "gone" in view and "other" not in view
    table["remote"] = {}  # written by another worker
    assert "remote" not in view.current()  # not re-read yet
    table["local"] = {}
    view.add(["local"])
    assert "local" in view  # this worker's own takedown applies immediately
    view.refresh_s = 0
    assert {"gone", "remote", "local"} <= view.current()


async def test_iter_lists_reads_a_failed_prefetched_search_when_ranking_fails(caplog):
    """Chunk 1's ranking fails while chunk 2's search (prefetched) fails too: the
    ranking error propagates and asyncio never reports the search's exception as
    "Task exception was never retrieved" (it would land in the log at ERROR)."""
    import asyncio
    import gc
    from types import SimpleNamespace

    import numpy as np

    from streams.ranking import RankingSettings, UserState, apply_interaction, new_cooccurrence, new_trending
    from streams.services.items import FreshItems
    from streams.services.recommender import Recommender

    class Items:  # the Milvus collection's search: the second call fails
        calls = 0

        def search_ids(self, vectors, k):
            Items.calls += 1
            if Items.calls == 2:
                raise RuntimeError("search failed")
            return [[] for _ in range(len(vectors))]

    class Cache:  # ranking chunk 1 fails while fetching its items
        async def get_many(self, ids):
            await asyncio.sleep(0.05)  # long enough for chunk 2's search to fail meanwhile
            raise ValueError("ranking failed")

    cfg = RankingSettings()
    settings = SimpleNamespace(ranking=cfg, worker=SimpleNamespace(search_chunk=1))
    ctx = SimpleNamespace(settings=settings, fresh=FreshItems(cfg.fresh_window_s), trending=new_trending(cfg),
                          cooc=new_cooccurrence(cfg), items=Items(), cache=Cache())
    users = {}
    for name in ("u1", "u2"):
        users[name] = state = UserState()
        apply_interaction(state, f"e-{name}", "i1", np.ones(4, dtype=np.float32), "like", None, 1.0, cfg)
    unretrieved = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        with pytest.raises(ValueError, match="ranking failed"):
            await Recommender(ctx).lists_for(users, now=2.0)
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert Items.calls == 2  # chunk 2's search did run (and fail) before chunk 1's ranking gave up
    assert unretrieved == []
