"""Everything the agents share in one worker process, created once when the first agent starts."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from encoders.client import TritonClient
from encoders.media import MediaResolver
from streams.log_filters import limit_repeats
from streams.items.ops_producer import ItemOpsProducer
from streams.items.replica import ItemReplica
from streams.items.store import ItemStore
from streams.ranking import CoOccurrence, DecayedCounter
from streams.ranking.learned import load_ranker
from streams.services.cache_warm import start_cache_warm
from streams.services.gc_policy import start_gc_policy
from streams.services.items import FreshItems, ItemCache
from streams.services.ranker_reload import ActiveRanker, start_ranker_watch
from streams.services.user_mirror import UserVectorMirror
from streams.settings import Settings, get_settings
from streams.vectors.collections import ItemCollection, UserCollection
from streams.vectors.milvus import milvus_client
from streams.web.instrument import instrument_worker
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
    # The item-keyed state (co-occurrence, popularity, trending, uploads, takedowns): this worker's
    # copy, applied from the item-deltas log that every worker writes and reads (streams/items/).
    store: ItemStore
    replica: ItemReplica
    media_slots: asyncio.Semaphore
    mirror: UserVectorMirror
    # fusion "learned": the fitted ranker (None: rank with the weighted blend) and what the lists it
    # ranks say made them (settings.model_version, plus the ranker's fingerprint). One object, swapped
    # whole when a refitted ranker is reloaded (streams/services/ranker_reload.py).
    active: ActiveRanker = ActiveRanker(None, "")
    # The user agent's item ops and parks go out on a connection of their own (see ops_producer.py);
    # None (contexts built by hand in tests): on Faust's producer.
    ops_producer: ItemOpsProducer | None = None
    # Called with the context after ``active`` changes (a ranker hot reload): the model info metric.
    on_model_change: Callable[[WorkerContext], None] | None = None
    # Background tasks (streams/services/gc_policy.py, ranker_reload.py); held here because the event
    # loop keeps only a weak reference to a task, and an unreferenced task can be collected mid-flight.
    gc_task: asyncio.Task | None = None
    ranker_task: asyncio.Task | None = None
    tick_task: asyncio.Task | None = None
    warm_task: asyncio.Task | None = None

    # The store's parts under the names the ranking code reads them by.
    @property
    def cooc(self) -> CoOccurrence:
        return self.store.cooc

    @property
    def trending(self) -> DecayedCounter:
        return self.store.trending

    @property
    def fresh(self) -> FreshItems:
        return self.store.fresh

    @property
    def takedowns(self) -> set[str]:
        return self.store.down

    @classmethod
    async def create(cls, settings: Settings) -> WorkerContext:
        client = await asyncio.to_thread(milvus_client, settings.milvus)
        dim = settings.encoders.dim
        items = ItemCollection(client, settings.milvus.items_collection, dim, settings.milvus.timeout_s)
        users = UserCollection(client, settings.milvus.users_collection, dim, settings.milvus.timeout_s)
        await asyncio.to_thread(items.ensure)
        await asyncio.to_thread(users.ensure)
        cache = ItemCache(items, settings.worker.item_cache_size)
        store = ItemStore(settings.ranking, settings.kafka.item_partitions, on_change=cache.invalidate)
        replica = ItemReplica(settings, store)
        # Nothing is ranked before the replica holds every item change written so far.
        await replica.start()
        return cls(
            settings=settings,
            triton=TritonClient(settings.triton),
            items=items,
            users=users,
            resolver=MediaResolver.from_settings(settings.encoders),
            cache=cache,
            store=store,
            replica=replica,
            media_slots=asyncio.Semaphore(settings.worker.media_workers),
            mirror=UserVectorMirror(users, settings.worker),
            active=ActiveRanker.of(settings.model_version, load_ranker(settings.ranking)),
            ops_producer=ItemOpsProducer(settings),
        )


_context: WorkerContext | None = None
_lock = asyncio.Lock()


async def get_context() -> WorkerContext:
    global _context
    async with _lock:
        if _context is None:
            _context = await WorkerContext.create(get_settings())
            instrument_worker(_context)
            limit_repeats()  # aiokafka is loaded by now; see log_filters.py
            w = _context.settings.worker
            _context.gc_task = start_gc_policy(w.gc_freeze_every_s, w.gc_full_collect_every_s)
            _context.ranker_task = start_ranker_watch(_context)
            from streams.items.owner import start_ticks  # the owner agent's module imports the app

            _context.tick_task = start_ticks(_context)
            if w.item_cache_warm and w.item_cache_size > 0:
                _context.warm_task = start_cache_warm(_context.cache, _context.cooc.pops)
            log.info("worker context ready (Triton %s, Milvus %s, event loop %s, BLAS threads %s, GIL switch "
                     "interval %.1f ms)", _context.settings.triton.url, _context.settings.milvus.uri,
                     type(asyncio.get_running_loop()).__module__, blas_threads(), sys.getswitchinterval() * 1000)
    return _context
