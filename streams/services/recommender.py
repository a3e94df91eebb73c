"""Candidates from every source, the shared scoring core, and publishing the list.

One call serves many users at once: their ANN searches go to Milvus as one
batched request (nq = number of users) and the item lookups as one batched get.
A user whose stored search still provably gives the same answer skips Milvus
(streams/ranking/ann_cache.py); only the others are searched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Container, Sequence
from dataclasses import dataclass, field

import numpy as np

from streams import topics
from streams.ranking import (Candidates, RecommendedItem, UserState, gather_candidates, history_ids, recommend,
                            user_vector)
from streams.ranking.ann_cache import AnnCache
from streams.ranking.candidates import unexplored
from streams.ranking.explain import explain_items
from streams.ranking.learned import FeatureContext, LinearRanker, learned_scores
from streams.records import encode_list
from streams.services.context import WorkerContext
from streams.services.futures import abandon
from streams.services.stats import BatchStats
from streams.settings import WebSettings, WorkerSettings
from streams.web.list_stats import list_metrics
from streams.web.metrics import ANN_CACHE_LOOKUPS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankedList:
    """One user's list and the ``model_version`` that ranked it (what :meth:`Recommender.publish` sends)."""

    items: list[RecommendedItem]
    model_version: str


@dataclass(frozen=True)
class ReadList:
    """What the read API shows of one user (:meth:`Recommender.read_list`): nothing is published."""

    items: list[RecommendedItem]
    model_version: str
    candidates: Candidates
    catalogue: dict  # item_id -> ItemInfo of every candidate and history item (titles)
    explanations: dict[str, dict] | None  # item_id -> explanation (explain=true only)


@dataclass(frozen=True)
class _Ann:
    """One chunk's content candidates: each user's N best hits, and the items to fetch with the chunk's.

    ``warm``: every hit of the users just searched (N + extra each), fetched into the item cache with
    the candidates (one batched get) so that their next lookup finds all the vectors it needs.
    """

    hits: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    warm: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EarlySearch:
    """A chunk's ANN search started ahead of its ranking (:meth:`Recommender.search_early`)."""

    users: tuple[str, ...]
    task: asyncio.Future

    def discard(self) -> None:
        """Not used after all (or used and done): see :func:`streams.services.futures.abandon`."""
        abandon(self.task, "early search not used")


class _Blocked:
    """Taken-down items plus the ones a read-API caller excluded: what ``recommend`` must not list."""

    def __init__(self, takedowns: Container[str], excluded: frozenset[str]) -> None:
        self.takedowns, self.excluded = takedowns, excluded

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.excluded or item_id in self.takedowns


def _worker_setting(ctx: WorkerContext, name: str):
    """``ctx``'s worker setting ``name``, or its default where the context has none (contexts built
    by hand in unit tests carry only what they need)."""
    return getattr(getattr(ctx.settings, "worker", None), name, WorkerSettings.model_fields[name].default)


class Recommender:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.ranking
        self._ranker_failures = 0
        self._ranker_failure_logged_at = -float("inf")
        # Contexts built by hand (unit tests) may carry no web settings: their defaults then.
        web = getattr(ctx.settings, "web", None) or WebSettings()
        self._lists = list_metrics(web.recent_lists)
        self._topic = topics.recommendations.get_topic_name()
        self._ann_cache = self._make_ann_cache(ctx)
        self._ann_min_history = _worker_setting(ctx, "ann_cache_min_history")
        self._ann_hit = ANN_CACHE_LOOKUPS.labels("hit")
        self._ann_miss = ANN_CACHE_LOOKUPS.labels("miss")
        # The user agent's stats (streams/services/stats.py): where a batch's "lists" stage goes.
        self.stats: BatchStats | None = None

    def _part(self, name: str):
        """Time a part of the "lists" stage in :attr:`stats` (nothing without stats)."""
        return self.stats.stage(f"lists: {name}") if self.stats is not None else contextlib.nullcontext()

    @staticmethod
    def _make_ann_cache(ctx: WorkerContext) -> AnnCache | None:
        """The per-user candidate cache from the worker settings; None when disabled or when the item
        cache cannot lend vectors (contexts built by hand in unit tests may have neither)."""
        users = _worker_setting(ctx, "ann_cache_users")
        if users <= 0 or not hasattr(getattr(ctx, "cache", None), "vectors_of"):
            return None
        return AnnCache(users, _worker_setting(ctx, "ann_cache_extra"), _worker_setting(ctx, "ann_cache_max_angle_deg"))

    @property
    def ann_cache(self) -> AnnCache | None:
        return self._ann_cache

    async def lists_for(self, users: dict[str, UserState | None], now: float) -> dict[str, RankedList]:
        """Each user's top-K at event time ``now`` (same time base as the offline evaluation)."""
        out: dict[str, RankedList] = {}
        async for group in self.iter_lists(users, now):
            out.update(group)
        return out

    def search_early(self, users: dict[str, UserState | None]) -> EarlySearch:
        """Start the ANN search of ``users``' first chunk now, for an :meth:`iter_lists` of the same
        users later: the search depends on the taste vectors only, so the worker runs it while the
        batch's item ops go to Kafka and the replica catches up, not after (streams/services/interactions.py)."""
        first = tuple(list(users)[: self.ctx.settings.worker.search_chunk])
        return EarlySearch(first, asyncio.ensure_future(self._search_and_fetch({u: users[u] for u in first})))

    async def _search_and_fetch(self, users: dict[str, UserState | None]) -> _Ann:
        """:meth:`_search`, then the hits' items read into the item cache (a cold item costs a Milvus
        round trip, which an early search takes off the lists' critical path as well)."""
        with self._part("early search"):  # a part: it runs beside the batch's other stages
            ann = await self._search(users)
        with self._part("early fetch"):
            await self.ctx.cache.get_many({i for hits in ann.hits.values() for i, _ in hits} | ann.warm)
        return ann

    async def iter_lists(self, users: dict[str, UserState | None], now: float,
                         early: EarlySearch | None = None) -> AsyncIterator[dict[str, RankedList]]:
        """The same lists, yielded a chunk of users at a time as soon as each chunk is ranked.

        Chunk n+1's ANN search runs in Milvus (another process, another core) while
        chunk n is ranked here, so search and scoring overlap instead of taking turns.
        ``early``: chunk 0's search, started by :meth:`search_early` (used when it is for the same users).
        """
        names = list(users)
        size = self.ctx.settings.worker.search_chunk
        groups = [names[i : i + size] for i in range(0, len(names), size)]
        if early is not None and (not groups or early.users != tuple(groups[0])):
            early.discard()
            early = None
        if not groups:
            return
        fresh = self.ctx.fresh.recent(now, self.cfg.fresh_candidates)
        trending = self.ctx.trending.top(self.cfg.trending_candidates, now)
        pending = early.task if early is not None else \
            asyncio.ensure_future(self._search({u: users[u] for u in groups[0]}))
        searched = pending
        try:
            for n, group in enumerate(groups):
                searched = pending
                if n + 1 < len(groups):  # Milvus takes the searches one after the other, as before
                    pending = asyncio.ensure_future(self._search_after(searched, {u: users[u] for u in groups[n + 1]}))
                yield await self._rank({u: users[u] for u in group}, searched, fresh, trending, now)
        finally:
            # Ranking chunk n failed (or the caller stopped early) while its search or chunk n+1's was in flight.
            abandon(searched, "search failed after its batch was abandoned")
            abandon(pending, "prefetched search failed after its batch was abandoned")

    async def _search_after(self, first: asyncio.Future, users: dict[str, UserState | None]) -> _Ann:
        """:meth:`_search` of ``users`` once ``first`` is done, whatever its outcome (its awaiter reads it)."""
        await asyncio.wait([first])
        return await self._search(users)

    async def _search(self, users: dict[str, UserState | None]) -> _Ann:
        """Each user's N = ``ann_candidates`` best content candidates: from the candidate cache where it
        proves the answer, the others searched in Milvus: users with a short history with limit N, the
        cached users' misses with limit N + extra (stored for next time)."""
        vectors = {u: v for u, s in users.items() if (v := user_vector(s)) is not None}
        if not vectors:
            return _Ann()
        n, cache = self.cfg.ann_candidates, self._ann_cache
        if cache is None or n <= 0:
            names = list(vectors)
            hits = await asyncio.to_thread(self.ctx.items.search_ids, np.stack([vectors[u] for u in names]), n)
            return _Ann(dict(zip(names, hits)))
        out: dict[str, list[tuple[str, float]]] = {}
        short: list[str] = []  # too short a history to gain from the cache: a plain limit-N search
        names: list[str] = []  # cached users whose stored search proves nothing: a limit-M search
        for user, vec in vectors.items():
            if len(users[user].history) < self._ann_min_history:
                short.append(user)
            elif (found := cache.lookup(user, vec, n, self._vectors_of)) is not None:
                out[user] = found
            else:
                names.append(user)
        self._ann_hit.inc(len(out))
        if not names and not short:
            return _Ann(out)
        self._ann_miss.inc(len(names))
        found_short, hits = await asyncio.to_thread(self._search_both, [vectors[u] for u in short],
                                                    [vectors[u] for u in names], n, cache.limit(n))
        out.update(zip(short, found_short))
        for user, row in zip(names, hits):
            out[user] = cache.store(user, vectors[user], n, row)  # the N best: what a limit-N search gives
        return _Ann(out, frozenset(i for row in hits for i, _ in row))

    def _search_both(self, short: list[np.ndarray], deep: list[np.ndarray], n: int,
                     m: int) -> tuple[list[list[tuple[str, float]]], list[list[tuple[str, float]]]]:
        """The limit-N search of the short-history users and the limit-M one of the cached users'
        misses, in one worker thread (each skipped when it has no user)."""
        search = self.ctx.items.search_ids
        return (search(np.stack(short), n) if short else [],
                search(np.stack(deep), m) if deep else [])

    def _vectors_of(self, ids: Sequence[str]) -> np.ndarray | None:
        """The item cache's vectors of a stored search's hits; None (a miss) when one of them is taken
        down: a fresh search (available items only) would not return it."""
        if not self.ctx.takedowns.isdisjoint(ids):
            return None
        return self.ctx.cache.vectors_of(ids)

    async def _rank(self, users: dict[str, UserState | None], searched: asyncio.Future,
                    fresh: list, trending: list, now: float) -> dict[str, RankedList]:
        """The chunk's lists. ``searched``: its ANN search, still running in Milvus while the other
        sources are gathered here (co-occurrence scoring does not need the hits; it is a good part
        of a long-history user's list), awaited only when the hits are needed."""
        ctx, cfg = self.ctx, self.cfg
        per_user: dict[str, Candidates] = {}
        wanted: set[str] = {i for i, _ in fresh} | {i for i, _ in trending}
        explore = unexplored(fresh, ctx.cooc, cfg)  # the chunk's, not each user's: it depends on fresh only
        with self._part("gather"):
            for user, state in users.items():
                cand = gather_candidates(state, ctx.cooc, cfg, (), fresh, trending, explore)
                per_user[user] = cand
                wanted.update(i for i, _ in cand.cooc)
                wanted.update(history_ids(state))
        with self._part("search wait"):
            ann = await searched
        wanted.update(ann.warm)
        for user, cand in per_user.items():
            cand.ann = list(ann.hits.get(user, ()))  # what gather_candidates would have made of them
            wanted.update(i for i, _ in cand.ann)
        with self._part("items"):
            items = await ctx.cache.get_many(wanted)
        takedowns = ctx.takedowns
        # One model for the whole chunk, even if a reload swaps ctx.active meanwhile.
        active = ctx.active
        out: dict[str, RankedList] = {}
        with self._part("rank"):
            for user, cand in per_user.items():
                learned = self._learned(active.ranker, users[user], cand, items, now, takedowns)
                recs = recommend(users[user], cand, items, now, cfg, taken_down=takedowns, learned=learned)
                # A list the ranker failed on was ranked by the blend: say so.
                version = active.model_version if learned is not None else ctx.settings.model_version
                out[user] = RankedList(recs, version)
        return out

    def _learned(self, ranker: LinearRanker | None, state: UserState | None, cand: Candidates, items: dict,
                 now: float, takedowns: Container[str]) -> dict[str, float] | None:
        """``ranker``'s candidate scores (fusion "learned"); None ranks with the weighted blend.

        A failure here (a bug, or state the ranker cannot read) falls back to the blend for this list
        rather than failing the batch: the user still gets a list, and the error is logged.
        """
        ctx = self.ctx
        if ranker is None:
            return None
        try:
            return learned_scores(ranker, FeatureContext(state, ctx.cooc, ctx.trending, items, now), cand,
                                  takedowns)
        except Exception:  # noqa: BLE001 - see the docstring
            # At most one report (with its traceback) a minute: a systematic failure would fail every list.
            self._ranker_failures += 1
            t = time.monotonic()
            if t - self._ranker_failure_logged_at >= 60.0:
                log.exception("learned ranker failed for %d list(s) since the last report; ranking them with "
                              "the weighted blend", self._ranker_failures)
                self._ranker_failures = 0
                self._ranker_failure_logged_at = t
            return None

    async def read_list(self, user_id: str, state: UserState | None, now: float, k: int,
                        exclude: frozenset[str] = frozenset(), explain: bool = False) -> ReadList:
        """The user's top-``k`` at ``now`` for the read API, by the worker's own path (ANN, co-occurrence,
        fresh, trending; the learned ranker or the blend; MMR), without ``exclude``; reads only.

        Excluded items are removed before ranking, like taken-down ones, so the list is the best one
        without them (not the published list with holes).
        """
        ctx, cfg = self.ctx, self.cfg
        fresh = ctx.fresh.recent(now, cfg.fresh_candidates)
        trending = ctx.trending.top(cfg.trending_candidates, now)
        searched = await self._search({user_id: state})
        cand = gather_candidates(state, ctx.cooc, cfg, searched.hits.get(user_id, []), fresh, trending)
        wanted = {i for src in (cand.ann, cand.cooc, cand.fresh, cand.trending) for i, _ in src}
        wanted.update(history_ids(state))
        items = await ctx.cache.get_many(wanted | searched.warm)
        if searched.warm:  # the catalogue shows candidates and history, not the search's extra hits
            items = {i: info for i, info in items.items() if i in wanted}
        blocked: Container[str] = _Blocked(ctx.takedowns, exclude) if exclude else ctx.takedowns
        active = ctx.active
        learned = self._learned(active.ranker, state, cand, items, now, blocked)
        recs = recommend(state, cand, items, now, cfg, taken_down=blocked, k=k, learned=learned)
        version = active.model_version if learned is not None else ctx.settings.model_version
        explanations = None
        if explain:
            fctx = FeatureContext(state, ctx.cooc, ctx.trending, items, now)
            explanations = explain_items(recs, cfg.fusion if learned is not None else self._blend_name(),
                                         active.ranker if learned is not None else None, fctx, learned)
        return ReadList(recs, version, cand, items, explanations)

    def _blend_name(self) -> str:
        """How a list is ranked without a learned ranker: "rrf", or the weighted blend."""
        return "rrf" if self.cfg.fusion == "rrf" else "weighted"

    async def publish(self, user_id: str, ranked: RankedList, source_event_id: str, event_ts: float) -> None:
        """Send the user's list (a ``Recommendation`` record, encoded without building its models)."""
        produced_at = time.time()
        value = encode_list(user_id, [(r.item_id, round(r.score, 6), r.reasons) for r in ranked.items],
                            ranked.model_version, source_event_id, event_ts, produced_at)
        await topics.recommendations.send(key=user_id.encode(), value=value)
        # Counted once the producer has the list: lists out, freshness, coverage and cold-start share.
        self._lists.published(self._topic, ranked.items, event_ts, produced_at)
