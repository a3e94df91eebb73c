"""Interactions: decode -> item vectors -> user state (dedupe inside) -> lists -> Kafka.

Per batch: one cache/Milvus lookup for all items, each user's state read and
written in the scope of that user's own event (its table partition), one
batched ANN search for all touched users, one list per user published, and the
new user vectors offered to the background mirror into Milvus ``users`` (the
fan-out index; see user_mirror.py for why it is not awaited here).
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from streams import tables
from streams.ranking import UserState, ingest_interaction, user_vector
from streams.records import Interaction, RecordError, decode_interaction, watch_ratio
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_letter
from streams.services.event_scope import event_scope
from streams.services.recommender import Recommender
from streams.services.retry import until_done
from streams.services.stats import BatchStats

log = logging.getLogger(__name__)
TRENDING_SNAPSHOT_EVERY_S = 30.0


class Touched(NamedTuple):
    """A user touched by a batch: their state, the event whose scope their writes use, and the list's tag."""

    state: UserState
    event: object
    event_id: str  # the user's last applied event
    ts: float


def load_state(raw: dict | None) -> UserState:
    return UserState.from_dict(raw) if raw else UserState()


class InteractionProcessor:
    def __init__(self, ctx: WorkerContext, recommender: Recommender) -> None:
        self.ctx = ctx
        self.recommender = recommender
        self._last_snapshot = time.monotonic()
        self.stats = BatchStats("interactions", ctx.settings.worker.stats_every_s)

    async def handle(self, events: list) -> None:
        try:
            await self._handle(events)
        finally:
            self.stats.batch_done(len(events))

    async def _handle(self, events: list) -> None:
        stats = self.stats
        decoded: list[tuple[object, Interaction]] = []
        for ev in events:
            try:
                decoded.append((ev, decode_interaction(ev.message.value)))
            except RecordError as exc:
                await send_dead_letter(ev, exc.stage, exc.reason)
        if not decoded:
            return
        with stats.stage("items"):
            items = await until_done("fetch items",
                                     lambda: self.ctx.cache.get_many(i.item_id for _, i in decoded),
                                     self.ctx.settings.worker)
        with stats.stage("state"):
            touched = await self._apply(decoded, items)
        if not touched:
            return
        with stats.stage("lists"):
            await self.refresh_lists(touched)
        self.ctx.mirror.offer({u: v for u, t in touched.items() if (v := user_vector(t.state)) is not None})

    async def _apply(self, decoded: list[tuple[object, Interaction]], items: dict) -> dict[str, Touched]:
        """Apply the batch's events to the users' states; write each touched user's state once.

        A user whose events in the batch were all duplicates is touched too: a
        duplicate is almost always a re-delivery after a crash, and Faust writes a
        table value to RocksDB at once but its changelog record (and our list and
        mirror row) only later, so a kill in between leaves the local store ahead
        of everything derived from it. Re-writing the state, re-publishing the list
        and re-offering the vector on the re-delivery closes that gap; without it
        the user's last events could be missing from the changelog for good
        (found by tests/reliability/test_worker_crash_replay.py).
        """
        cfg = self.ctx.settings.ranking
        takedowns = self.ctx.takedowns.current()
        touched: dict[str, Touched] = {}
        for ev, it in decoded:
            item = items.get(it.item_id)
            if item is None:
                await send_dead_letter(ev, "unknown_item", f"item {it.item_id!r} is not in the catalogue")
                continue
            if it.user_id in touched:
                state = touched[it.user_id].state
            else:
                with event_scope(ev):
                    state = load_state(tables.user_state.get(it.user_id))
            # A taken-down item still marks the event as seen, but teaches nothing.
            vec = None if it.item_id in takedowns else item.vector
            ratio = watch_ratio(it, self.ctx.cache.duration(it.item_id))
            with event_scope(ev):  # co-occurrence rows are table writes too
                applied = ingest_interaction(state, it.event_id, it.item_id, vec, it.type, ratio, it.ts, cfg,
                                             cooc=self.ctx.cooc, trending=self.ctx.trending)
            if applied:
                # The list is tagged with the user's last *applied* event, never a dropped duplicate.
                touched[it.user_id] = Touched(state, ev, it.event_id, it.ts)
            else:
                log.debug("duplicate event %s for %s: state re-written, list re-published", it.event_id, it.user_id)
                if it.user_id not in touched:
                    last = next(reversed(state.recent_event_ids), it.event_id)
                    touched[it.user_id] = Touched(state, ev, last, state.updated_ts or it.ts)
        self._maybe_snapshot_trending(decoded[-1][0])
        for user, t in touched.items():
            with event_scope(t.event):
                tables.user_state[user] = t.state.to_dict()
        return touched

    def _maybe_snapshot_trending(self, ev) -> None:
        """Trending is soft state: snapshot it now and then so a restart resumes with it.

        Written from inside an event's scope because Faust's table store needs one.
        """
        if time.monotonic() - self._last_snapshot < TRENDING_SNAPSHOT_EVERY_S:
            return
        with event_scope(ev):
            tables.trending["snapshot"] = self.ctx.trending.to_dict()
        self._last_snapshot = time.monotonic()

    async def refresh_lists(self, touched: dict[str, Touched]) -> None:
        """Rank and publish chunk by chunk, so the first users' lists leave before the last are ranked."""
        now = max(t.ts for t in touched.values())
        todo = dict(touched)  # a transient failure mid-way retries only the users not yet published
        await until_done("recommend", lambda: self._publish_lists(todo, now), self.ctx.settings.worker)

    async def _publish_lists(self, todo: dict[str, Touched], now: float) -> None:
        async for group in self.recommender.iter_lists({u: t.state for u, t in todo.items()}, now):
            for user, ranked in group.items():
                t = todo.pop(user)
                await self.recommender.publish(user, ranked, t.event_id, t.ts)
