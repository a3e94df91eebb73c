"""Recommender.iter_lists: the next chunk's search overlapping this chunk's ranking."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import numpy as np
import pytest

from streams.ranking import RankingSettings, UserState, apply_interaction, new_cooccurrence, new_trending
from streams.services.items import FreshItems
from streams.services.recommender import Recommender


async def test_iter_lists_reads_a_failed_prefetched_search_when_ranking_fails():
    """Chunk 1's ranking fails while chunk 2's search (prefetched) fails too: the
    ranking error propagates and asyncio never reports the search's exception as
    "Task exception was never retrieved" (it would land in the log at ERROR)."""
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


def test_a_failing_learned_ranker_falls_back_to_the_blend_for_that_list(caplog):
    """A ranker error must not fail the batch (its events would go to the dead-letter topic): the list
    is ranked with the weighted blend instead, and the error is logged."""
    import logging

    from streams.ranking import Candidates, ItemInfo, recommend

    class Broken:
        item_model = None  # a ranker's item regression (none: its EASE features are 0)

        def score(self, features):
            raise FloatingPointError("boom")

    cfg = RankingSettings()
    ctx = SimpleNamespace(settings=SimpleNamespace(ranking=cfg), cooc=new_cooccurrence(cfg),
                          trending=new_trending(cfg))
    items = {f"i{j}": ItemInfo(f"i{j}", "c", f"t{j}", np.eye(4, dtype=np.float32)[j], 0.0) for j in range(3)}
    cand = Candidates(cooc=[("i0", 0.2), ("i1", 0.9), ("i2", 0.5)])
    rec = Recommender(ctx)
    with caplog.at_level(logging.ERROR, logger="streams.services.recommender"):
        learned = [rec._learned(Broken(), UserState(), cand, items, 1.0, ()) for _ in range(5)][0]
    assert learned is None
    assert "weighted blend" in caplog.text and "boom" in caplog.text
    assert len(caplog.records) == 1  # one report a minute, not one per list
    # ... and with None, recommend() ranks with the blend: co-occurrence order.
    assert [r.item_id for r in recommend(UserState(), cand, items, 1.0, cfg, learned=learned)] == ["i1", "i2", "i0"]
