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
            states, changed = await self._apply(decoded, items)
        if not changed:
            return
        with stats.stage("lists"):
            await self.refresh_lists({u: states[u] for u in changed})
        # Every user seen in the batch, duplicates included: a re-delivered event after
        # a crash re-offers its user's vector, which heals a mirror write the crash lost.
        self.ctx.mirror.offer({u: v for u, (s, _, _) in states.items() if (v := user_vector(s)) is not None})

    async def _apply(self, decoded: list[tuple[object, Interaction]], items: dict) -> tuple[dict, set[str]]:
        """Apply the batch's events to the users' states and write each changed state once."""
        cfg = self.ctx.settings.ranking
        takedowns = self.ctx.takedowns.current()
        states: dict[str, tuple[UserState, object, Interaction]] = {}
        changed: set[str] = set()
        for ev, it in decoded:
            item = items.get(it.item_id)
            if item is None:
                await send_dead_letter(ev, "unknown_item", f"item {it.item_id!r} is not in the catalogue")
                continue
            if it.user_id in states:
                state = states[it.user_id][0]
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
                states[it.user_id] = (state, ev, it)
                changed.add(it.user_id)
            else:
                states.setdefault(it.user_id, (state, ev, it))
                log.debug("duplicate event %s for %s ignored", it.event_id, it.user_id)
        self._maybe_snapshot_trending(decoded[-1][0])
        for user in changed:
            state, ev, _ = states[user]
            with event_scope(ev):
                tables.user_state[user] = state.to_dict()
        return states, changed

    def _maybe_snapshot_trending(self, ev) -> None:
        """Trending is soft state: snapshot it now and then so a restart resumes with it.

        Written from inside an event's scope because Faust's table store needs one.
        """
        if time.monotonic() - self._last_snapshot < TRENDING_SNAPSHOT_EVERY_S:
            return
        with event_scope(ev):
            tables.trending["snapshot"] = self.ctx.trending.to_dict()
        self._last_snapshot = time.monotonic()

    async def refresh_lists(self, touched: dict[str, tuple[UserState, object, Interaction]]) -> None:
        """Rank and publish chunk by chunk, so the first users' lists leave before the last are ranked."""
        now = max(it.ts for _, _, it in touched.values())
        todo = dict(touched)  # a transient failure mid-way retries only the users not yet published
        await until_done("recommend", lambda: self._publish_lists(todo, now), self.ctx.settings.worker)

    async def _publish_lists(self, todo: dict[str, tuple[UserState, object, Interaction]], now: float) -> None:
        async for group in self.recommender.iter_lists({u: s for u, (s, _, _) in todo.items()}, now):
            for user, recs in group.items():
                _, _, it = todo.pop(user)
                await self.recommender.publish(user, recs, it.event_id, it.ts)
