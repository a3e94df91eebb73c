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
    assert await _unretrieved_after(Recommender(ctx).lists_for(users, now=2.0), "ranking failed") == []
    assert Items.calls == 2  # chunk 2's search did run (and fail) before chunk 1's ranking gave up


async def _unretrieved_after(lists, message: str) -> list:
    """Await ``lists`` (it must raise a ValueError matching ``message``), let every task it left behind
    finish and be collected: what asyncio then reports as "exception was never retrieved"."""
    unretrieved = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        with pytest.raises(ValueError, match=message):
            await lists
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    return unretrieved


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


def _ann_context(cache_users: int):
    """A hand-built context over 2,000 items (16-d, 20 topics): an exact search that counts its
    calls, an item cache that lends vectors, and the per-user candidate cache's settings."""
    from streams.ranking import ItemInfo
    from streams.services.ranker_reload import ActiveRanker

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 16))
    x = centers[rng.integers(0, 20, 2000)] + 0.7 * rng.standard_normal((2000, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"i{j:04d}" for j in range(len(x))]
    infos = {iid: ItemInfo(iid, f"c{j % 50}", iid, x[j], 0.0) for j, iid in enumerate(ids)}

    class Items:
        def __init__(self):
            self.calls = []

        def search_ids(self, vectors, k):
            self.calls.append((len(vectors), k))
            q = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            sims = q @ x.T
            return [[(ids[j], float(s[j])) for j in np.argsort(-s, kind="stable")[:k]] for s in sims]

    class Cache:
        def __init__(self):
            self.held: dict = {}

        async def get_many(self, wanted):
            self.held.update({i: infos[i] for i in wanted if i in infos})
            return {i: infos[i] for i in wanted if i in infos}

        def vectors_of(self, wanted):
            if any(i not in self.held for i in wanted):
                return None
            return np.stack([self.held[i].vector for i in wanted])

    cfg = RankingSettings(fusion="weighted")
    worker = SimpleNamespace(search_chunk=2, ann_cache_users=cache_users, ann_cache_extra=200,
                             ann_cache_max_angle_deg=20.0)
    ctx = SimpleNamespace(settings=SimpleNamespace(ranking=cfg, model_version="v", worker=worker),
                          fresh=FreshItems(cfg.fresh_window_s), trending=new_trending(cfg),
                          cooc=new_cooccurrence(cfg), items=Items(), cache=Cache(), takedowns=set(),
                          active=ActiveRanker(None, "v"))
    return ctx, x, ids


async def test_cached_candidates_skip_the_search_and_give_the_same_lists():
    """Users with a long history take one more event: the lists are the ones a search gives (the cache
    off), and the users whose stored search proves the answer are not searched at all."""
    cached, x, ids = _ann_context(cache_users=100)
    plain, _, _ = _ann_context(cache_users=0)
    rng = np.random.default_rng(1)
    cfg = cached.settings.ranking
    users = {}
    for u in range(6):
        users[f"u{u}"] = state = UserState()
        topic = rng.choice(len(ids), 60, replace=False)
        for t, j in enumerate(topic):
            apply_interaction(state, f"e{u}-{t}", ids[j], x[j], "like", None, 1.0 + t, cfg)
    rec, ref = Recommender(cached), Recommender(plain)
    first = await rec.lists_for(users, now=100.0)
    assert [c[1] for c in cached.items.calls] == [cfg.ann_candidates + 200] * 3  # N + extra, nq = chunk
    assert len(rec.ann_cache) == 6
    for u, state in users.items():  # one more like each: a small turn
        j = int(rng.integers(0, len(ids)))
        apply_interaction(state, f"e{u}-more", ids[j], x[j], "like", None, 90.0, cfg)
    cached.items.calls.clear()
    second = await rec.lists_for(users, now=100.0)
    expected = await ref.lists_for(users, now=100.0)
    searched = sum(n for n, _ in cached.items.calls)
    assert rec.ann_cache.hits > 0 and searched == 6 - rec.ann_cache.hits
    for u in users:
        assert [r.item_id for r in second[u].items] == [r.item_id for r in expected[u].items]
        assert [r.score for r in second[u].items] == pytest.approx([r.score for r in expected[u].items], abs=1e-5)
    assert first.keys() == second.keys()


async def test_a_miss_ranks_the_n_best_only_and_a_taken_down_hit_is_searched_again():
    ctx, x, ids = _ann_context(cache_users=100)
    cfg = ctx.settings.ranking
    state = UserState()
    # A history whose N-th and (N+1)-th hits are not within rounding of each other (that would miss).
    for t, j in enumerate(range(0, 600, 7)):
        apply_interaction(state, f"e{t}", ids[j], x[j], "like", None, 1.0 + t, cfg)
    rec = Recommender(ctx)
    searched = await rec._search({"u": state})
    assert len(searched.hits["u"]) == cfg.ann_candidates  # not N + extra: lists as without the cache
    assert len(searched.warm) == cfg.ann_candidates + 200
    await ctx.cache.get_many(searched.warm)
    again = await rec._search({"u": state})
    assert ctx.items.calls == [(1, cfg.ann_candidates + 200)] and not again.warm  # a hit
    assert [i for i, _ in again.hits["u"]] == [i for i, _ in searched.hits["u"]]
    ctx.takedowns.add(searched.hits["u"][0][0])  # a fresh search would not list it
    await rec._search({"u": state})
    assert len(ctx.items.calls) == 2


async def test_a_short_history_is_searched_for_n_only_and_never_cached():
    """Below ann_cache_min_history (10) one event turns the taste too far for a stored search to
    prove anything: such users get the plain limit-N search, beside the cached users' deep one."""
    ctx, x, ids = _ann_context(cache_users=100)
    cfg = ctx.settings.ranking
    short, long_ = UserState(), UserState()
    for t in range(5):
        apply_interaction(short, f"s{t}", ids[t], x[t], "like", None, 1.0 + t, cfg)
    for t, j in enumerate(range(0, 600, 7)):
        apply_interaction(long_, f"l{t}", ids[j], x[j], "like", None, 1.0 + t, cfg)
    rec = Recommender(ctx)
    for _ in range(2):
        found = await rec._search({"s": short, "l": long_})
        assert len(found.hits["s"]) == cfg.ann_candidates
        await ctx.cache.get_many(found.warm)
    # First round: one search each (N for the short history, N + extra for the long one); second
    # round: the long history hits, the short one is searched again, for N.
    assert ctx.items.calls == [(1, cfg.ann_candidates), (1, cfg.ann_candidates + 200), (1, cfg.ann_candidates)]
    assert len(rec.ann_cache) == 1 and rec.ann_cache.hits == 1


def _three_users(ctx, x, ids, cooc: bool = False) -> dict[str, UserState]:
    """Three users who each liked 12 items (one topic walk each); ``cooc``: their histories feed the
    co-occurrence rows too, so their lists have co-occurrence candidates to gather."""
    cfg = ctx.settings.ranking
    users = {}
    for u in range(3):
        users[f"u{u}"] = state = UserState()
        for t in range(12):
            j = (u * 97 + t * 13) % len(ids)
            if cooc:
                ctx.cooc.add([ids[(u * 97 + s * 13) % len(ids)] for s in range(t)], ids[j])
            apply_interaction(state, f"e{u}-{t}", ids[j], x[j], "like", None, 1.0 + t, cfg)
    return users


async def test_an_early_search_serves_the_first_chunk_and_a_stale_one_is_discarded():
    """search_early starts chunk 0's search ahead of the lists (the worker overlaps it with the item
    ops): iter_lists uses it instead of searching again, and the lists are the ones it would rank."""
    ctx, x, ids = _ann_context(cache_users=0)
    cfg = ctx.settings.ranking
    users = _three_users(ctx, x, ids)
    rec = Recommender(ctx)
    expected = await rec.lists_for(users, now=50.0)
    ctx.items.calls.clear()
    early = rec.search_early(users)
    assert early.users == ("u0", "u1")  # search_chunk 2
    got = {}
    async for group in rec.iter_lists(users, 50.0, early):
        got.update(group)
    assert ctx.items.calls == [(2, cfg.ann_candidates), (1, cfg.ann_candidates)]  # chunk 0 searched once
    assert {u: [r.item_id for r in v.items] for u, v in got.items()} == \
        {u: [r.item_id for r in v.items] for u, v in expected.items()}
    ctx.items.calls.clear()
    stale = rec.search_early({"u2": users["u2"]})  # for other users than the lists' first chunk
    await rec.lists_for(users, now=50.0)
    got2 = {}
    async for group in rec.iter_lists(users, 50.0, stale):
        got2.update(group)
    assert stale.task.done()
    # The stale one (nq 1) and two full rounds (2 + 1 each): the stale search did not stand in for chunk 0.
    assert sorted(n for n, _ in ctx.items.calls) == [1, 1, 1, 2, 2]
    assert {u: [r.item_id for r in v.items] for u, v in got2.items()} == \
        {u: [r.item_id for r in v.items] for u, v in expected.items()}


async def test_a_chunks_candidates_are_gathered_while_its_search_runs():
    """Co-occurrence scoring needs no ANN hit, so a chunk's other sources are gathered while its search
    is still in Milvus; the hits join afterwards and the lists are the same as searched-then-gathered."""
    import threading

    ctx, x, ids = _ann_context(cache_users=0)
    users = _three_users(ctx, x, ids, cooc=True)
    rec = Recommender(ctx)
    expected = await rec.lists_for(users, now=50.0)

    gathered = threading.Event()
    seen_while_searching: list[bool] = []
    search = ctx.items.search_ids

    def slow_search(vectors, k):  # in the worker thread: waits (bounded) for the chunk's gathering
        seen_while_searching.append(gathered.wait(timeout=5.0))
        gathered.clear()
        return search(vectors, k)

    score = ctx.cooc.score_candidates_explained

    def scoring(*args, **kwargs):
        gathered.set()
        return score(*args, **kwargs)

    ctx.items.search_ids = slow_search
    ctx.cooc.score_candidates_explained = scoring
    got = await rec.lists_for(users, now=50.0)
    assert seen_while_searching == [True, True]  # both chunks (search_chunk 2): gathered during the search
    assert {u: [r.item_id for r in v.items] for u, v in got.items()} == \
        {u: [r.item_id for r in v.items] for u, v in expected.items()}


async def test_a_failure_while_gathering_leaves_no_search_unread():
    """Gathering chunk 1's candidates fails while its search (and chunk 2's, chained after it) fail
    too: the gathering error propagates, and asyncio reports no "exception was never retrieved"."""
    ctx, x, ids = _ann_context(cache_users=0)
    cfg = ctx.settings.ranking
    ctx.settings.worker.search_chunk = 1

    def failing_search(vectors, k):
        raise RuntimeError("search failed")

    def failing_scoring(*args, **kwargs):
        raise ValueError("gathering failed")

    ctx.items.search_ids = failing_search
    ctx.cooc.score_candidates_explained = failing_scoring
    users = {}
    for u in range(2):
        users[f"u{u}"] = state = UserState()
        apply_interaction(state, f"e{u}", ids[u], x[u], "like", None, 1.0, cfg)
    assert await _unretrieved_after(Recommender(ctx).lists_for(users, now=2.0), "gathering failed") == []
