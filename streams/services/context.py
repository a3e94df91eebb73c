"""Everything the agents share in one worker process, created once when the first agent starts."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from encoders.client import TritonClient
from encoders.media import MediaResolver
from streams.log_filters import limit_repeats
from streams.ranking import CoOccurrence, DecayedCounter, new_cooccurrence, new_trending
from streams.ranking.learned import load_ranker
from streams.services.gc_policy import start_gc_policy
from streams.services.items import FreshItems, ItemCache
from streams.services.ranker_reload import ActiveRanker, start_ranker_watch
from streams.services.table_cache import CachedTable
from streams.services.takedowns import TakedownView
from streams.services.user_mirror import UserVectorMirror
from streams.settings import Settings, get_settings
from streams.vectors.collections import ItemCollection, UserCollection
from streams.vectors.milvus import milvus_client
from streams.worker import blas_threads

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    triton: TritonClient
    items: ItemCollection
    users: UserCollection
    resolver: MediaResolver
    cache: ItemCache
    fresh: FreshItems
    trending: DecayedCounter
    cooc: CoOccurrence
    media_slots: asyncio.Semaphore
    takedowns: TakedownView
    mirror: UserVectorMirror
    # fusion "learned": the fitted ranker (None: rank with the weighted blend) and what the lists it
    # ranks say made them (settings.model_version, plus the ranker's fingerprint). One object, swapped
    # whole when a refitted ranker is reloaded (streams/services/ranker_reload.py).
    active: ActiveRanker = ActiveRanker(None, "")
    # Background tasks (streams/services/gc_policy.py, ranker_reload.py); held here because the event
    # loop keeps only a weak reference to a task, and an unreferenced task can be collected mid-flight.
    gc_task: asyncio.Task | None = None
    ranker_task: asyncio.Task | None = None

    @classmethod
    async def create(cls, settings: Settings) -> WorkerContext:
        from streams import tables

        client = await asyncio.to_thread(milvus_client, settings.milvus)
        dim = settings.encoders.dim
        items = ItemCollection(client, settings.milvus.items_collection, dim, settings.milvus.timeout_s)
        users = UserCollection(client, settings.milvus.users_collection, dim, settings.milvus.timeout_s)
        await asyncio.to_thread(items.ensure)
        await asyncio.to_thread(users.ensure)
        rank = settings.ranking
        fresh = FreshItems(rank.fresh_window_s)
        await fresh.seed(items, 1000)
        ranker = load_ranker(rank)
        trending = new_trending(rank)
        snapshot = tables.trending.get("snapshot")
        if snapshot:
            trending = DecayedCounter.from_dict(snapshot)
            log.info("trending restored from its snapshot (%d items)", len(trending))
        return cls(
            settings=settings,
            triton=TritonClient(settings.triton),
            items=items,
            users=users,
            resolver=MediaResolver.from_settings(settings.encoders),
            cache=ItemCache(items, settings.worker.item_cache_size),
            fresh=fresh,
            trending=trending,
            cooc=new_cooccurrence(rank, counts=CachedTable(tables.cooccurrence, settings.worker.table_cache_size),
                                  pops=CachedTable(tables.item_popularity, settings.worker.table_cache_size)),
            media_slots=asyncio.Semaphore(settings.worker.media_workers),
            takedowns=TakedownView(tables.takedowns),
            mirror=UserVectorMirror(users, settings.worker),
            active=ActiveRanker.of(settings.model_version, ranker),
        )


_context: WorkerContext | None = None
_lock = asyncio.Lock()


async def get_context() -> WorkerContext:
    global _context
    async with _lock:
        if _context is None:
            _context = await WorkerContext.create(get_settings())
            limit_repeats()  # aiokafka is loaded by now; see log_filters.py
            w = _context.settings.worker
            _context.gc_task = start_gc_policy(w.gc_freeze_every_s, w.gc_full_collect_every_s)
            _context.ranker_task = start_ranker_watch(_context)
            log.info("worker context ready (Triton %s, Milvus %s, event loop %s, BLAS threads %s)",
                     _context.settings.triton.url, _context.settings.milvus.uri,
                     type(asyncio.get_running_loop()).__module__, blas_threads())
    return _context
