"""The user agent: a user's events and commands -> user state -> item ops -> lists -> Kafka.

One stream, ``interactions``, ``impressions`` and ``user-commands``
(co-partitioned, keyed by user), so everything that touches a user is handled
one batch at a time by the worker that owns the user: an interaction, a list the
user was shown, a new-content refresh, a forget-me, an interaction released from
parking. Per batch:

1. decode; a record whose key is not its ``user_id``, or that sits in another
   partition than Kafka's default partitioner puts its key in, is dead-lettered
   (stages ``key`` / ``partition``: one owner per user, see
   ``streams/items/partitioning.py``);
2. one cache/Milvus lookup for all the batch's items; an interaction whose item
   is not in the catalogue yet is parked with the item's owner
   (``streams/items/owner.py``), never dead-lettered at once;
3. the events, in order, applied to the users' states (dedupe inside); each
   applied event's item ops (co-occurrence, popularity, trending) collected;
   an impression is remembered in its user's state and the interactions after
   it attributed to it (``streams/services/impressions.py``: online metrics,
   counted once the states are written; an impression alone publishes no list);
   a forget-me replaces the user's state by an empty one that remembers where
   the user's erased events end;
4. the item ops sent to the item-state log, one record per item partition,
   and awaited: an event's item ops are in Kafka before its user's state is
   (streams/items/store.py explains why that makes re-deliveries idempotent);
5. each touched user's state written once; forgotten users deleted from Milvus
   and their lists tombstoned;
6. the replica caught up with the log (``item_state_reads``: the batch's own
   ops are applied on their acks, ``ItemReplica.apply_own``, the log's end is
   asked while they go out), then one batched ANN search for all users (started
   after step 3), one list per user published, and the new user vectors offered
   to the background mirror into Milvus ``users``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from streams import tables, topics
from streams.items import wire
from streams.items.partitioning import partition_for
from streams.ranking import UserState, user_vector
from streams.ranking.ingest import ingest_user
from streams.records import Impression, Interaction, RecordError, decode_impression, decode_interaction, watch_ratio
from streams.services import impressions as online
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_letter, send_dead_record
from streams.services.futures import abandon
from streams.services.event_scope import event_scope
from streams.services.recommender import EarlySearch, Recommender
from streams.services.retry import until_done
from streams.services.stats import BatchStats

log = logging.getLogger(__name__)


class Touched(NamedTuple):
    """A user touched by a batch: their state, the event whose scope their writes use, and the list's tag."""

    state: UserState
    event: object
    event_id: str  # the user's last applied event
    ts: float


@dataclass(slots=True)
class _Event:
    """An interaction to apply, from the interactions topic or released from parking."""

    ev: object  # the Faust event: table scope
    it: Interaction
    src: str  # "i<p>" (interactions partition p) or "c<p>" (user-commands partition p)
    offset: int  # its position in src: the idempotence key of its item ops
    origin: int  # its offset in its interactions partition (forget-me compares it)
    raw: bytes
    origin_topic: str
    origin_partition: int
    parked_at: float | None = None


@dataclass(slots=True)
class _Shown:
    """An impression: a list the user was shown."""

    ev: object
    imp: Impression


def load_state(raw: dict | None) -> UserState:
    return UserState.from_dict(raw) if raw else UserState()


class InteractionProcessor:
    def __init__(self, ctx: WorkerContext, recommender: Recommender) -> None:
        self.ctx = ctx
        self.recommender = recommender
        self.stats = BatchStats("interactions", ctx.settings.worker.stats_every_s)
        recommender.stats = self.stats
        k = ctx.settings.kafka
        self.interactions_topic = k.topics.interactions.name
        self.impressions_topic = k.topics.impressions.name
        self.commands_topic = topics.user_commands.get_topic_name()
        self.user_partitions = k.topics.interactions.partitions
        self.item_partitions = k.item_partitions
        self.dropped_forgotten = 0
        self._slow_replica_logged_at = -float("inf")

    async def handle(self, events: list) -> None:
        now = time.time()
        # From each record's timestamp (its producer's clock, or the broker's): what no stage shows.
        self.stats.queued([now - ts for ev in events if (ts := ev.message.timestamp)])
        try:
            await self._handle(events)
        finally:
            self.stats.batch_done(len(events))

    # -- 1. decode -------------------------------------------------------------------------
    async def _decode(self, events: list) -> list:
        entries: list = []  # _Event | ("forget" | "refresh", event, command), in stream order
        for ev in events:
            msg = ev.message
            if msg.topic == self.commands_topic:
                cmd = orjson.loads(msg.value)
                if cmd["command"] != "replay":
                    entries.append((cmd["command"], ev, cmd))
                    continue
                raw = wire.parked_raw(cmd)
                try:
                    it = decode_interaction(raw, max_future_s=None)
                except RecordError as exc:  # it was valid when parked: only a foreign writer gets here
                    await send_dead_record(raw, cmd["user_id"].encode(), cmd["topic"], cmd["partition"],
                                           cmd["offset"], exc.stage, exc.reason)
                    continue
                entries.append(_Event(ev, it, f"c{msg.partition}", msg.offset, int(cmd["offset"]), raw,
                                      cmd["topic"], int(cmd["partition"]), float(cmd["parked_at"])))
                continue
            if msg.topic == self.impressions_topic:
                try:
                    imp = decode_impression(msg.value)
                except RecordError as exc:  # to interactions.dlq (deadletters.py), never a crash
                    await send_dead_letter(ev, exc.stage, exc.reason)
                    continue
                if await self._routed(ev, imp.user_id, "impression"):
                    entries.append(_Shown(ev, imp))
                continue
            try:
                it = decode_interaction(msg.value)
            except RecordError as exc:
                await send_dead_letter(ev, exc.stage, exc.reason)
                continue
            if not await self._routed(ev, it.user_id, "interaction"):
                continue
            entries.append(_Event(ev, it, f"i{msg.partition}", msg.offset, msg.offset, msg.value, msg.topic,
                                  msg.partition))
        return entries

    async def _routed(self, ev, user_id: str, what: str) -> bool:
        """True when the record is keyed by its user and in that user's partition; else dead-lettered."""
        msg = ev.message
        key = user_id.encode()
        if msg.key != key:
            await send_dead_letter(ev, "key", f"record key {msg.key!r} is not the {what}'s user_id "
                                              f"{user_id!r} (key {what}s by user_id)")
            return False
        want = partition_for(key, self.user_partitions)
        if msg.partition != want:
            await send_dead_letter(ev, "partition", f"user {user_id!r} belongs in partition {want}, not "
                                                    f"{msg.partition}: produce with Kafka's default (murmur2) "
                                                    f"partitioner (librdkafka: partitioner=murmur2_random)")
            return False
        return True

    async def _handle(self, events: list) -> None:
        stats = self.stats
        entries = await self._decode(events)
        if not entries:
            return
        wanted = [e.it.item_id for e in entries if isinstance(e, _Event)]
        with stats.stage("items"):
            items = await until_done("fetch items", lambda: self.ctx.cache.get_many(wanted),
                                     self.ctx.settings.worker) if wanted else {}
        with stats.stage("state"):
            batch = await self._apply(entries, items)
        # The lists' first ANN search needs only the new taste vectors: it runs in Milvus while the
        # item ops go to Kafka and the replica catches up (the latency of a paced batch is the sum of
        # its round trips). Its answer does not depend on the item state, so the lists are unchanged.
        ann = self.recommender.ann_cache
        ann_hits, ann_misses = (ann.hits, ann.misses) if ann is not None else (0, 0)
        early = self.recommender.search_early({u: t.state for u, t in batch.touched.items()}) \
            if batch.touched else None
        try:
            await self._ops_states_lists(batch, early)
        finally:
            if early is not None:
                early.discard()  # unused (a failure before the lists): cancelled; used: nothing to do
        if ann is not None:  # users whose content candidates came from the cache, and those searched
            stats.count("ann cached", ann.hits - ann_hits)
            stats.count("ann searched", ann.misses - ann_misses)

    async def _ops_states_lists(self, batch: _Batch, early: EarlySearch | None) -> None:
        # Where the item log ends, asked while the batch's item ops go out rather than after their acks
        # (one round trip less per batch): the barrier below waits for that end and for the batch's own
        # ops, so a list still sees its batch and everything any worker had sent before it.
        log_end = asyncio.ensure_future(self.ctx.replica.end_offsets()) \
            if (batch.touched or batch.refresh) and self._consistent_reads else None
        try:
            await self._ops_states_lists_after(batch, early, log_end)
        finally:
            if log_end is not None:  # awaited by the barrier; else the batch failed before it
                abandon(log_end, "log end not used after the batch failed")

    @property
    def _consistent_reads(self) -> bool:
        return self.ctx.settings.worker.item_state_reads == "consistent"

    async def _ops_states_lists_after(self, batch: _Batch, early: EarlySearch | None,
                                      log_end: asyncio.Future | None) -> None:
        stats = self.stats
        with stats.stage("item ops"):
            own_end = await self._send_item_ops(batch)
            self._write_states(batch)
        online.count(batch.outcomes)  # the states that remember them are written
        if batch.forgotten:
            await self._forget(batch.forgotten)
        if not batch.touched and not batch.refresh:
            return
        with stats.stage("replica"):
            await self._replica_caught_up(log_end, own_end)
        misses = self.ctx.cache.misses
        with stats.stage("lists"):
            if batch.touched:
                await self.refresh_lists(batch.touched, early)
            if batch.refresh:
                await self._refresh(batch)
        stats.count("lists", len(batch.touched))
        stats.count("item fetches", self.ctx.cache.misses - misses)  # cold cache: rows read from Milvus
        self.ctx.mirror.offer({u: v for u, t in batch.touched.items() if (v := user_vector(t.state)) is not None})

    # -- 3. apply ------------------------------------------------------------------------------
    async def _apply(self, entries: list, items: dict) -> _Batch:
        """Apply the batch in stream order to the users' states, in memory; collect the item ops.

        A user whose events in the batch were all duplicates is touched too: a
        duplicate is almost always a re-delivery after a crash, and Faust writes a
        table value to RocksDB at once but its changelog record (and our list and
        mirror row) only later, so a kill in between leaves the local store ahead
        of everything derived from it. Re-writing the state, re-publishing the list
        and re-offering the vector on the re-delivery closes that gap; without it
        the user's last events could be missing from the changelog for good
        (found by tests/reliability/test_worker_crash_replay.py). Its item ops need
        no re-sending: they were sent before its state was written.
        """
        cfg = self.ctx.settings.ranking
        w = self.ctx.settings.worker
        takedowns = self.ctx.takedowns
        b = _Batch()

        def state_of(user: str, ev) -> UserState:
            if user not in b.states:
                with event_scope(ev):
                    b.states[user] = (load_state(tables.user_state.get(user)), ev)
            return b.states[user][0]

        for e in entries:
            if isinstance(e, _Shown):
                imp = e.imp
                state = state_of(imp.user_id, e.ev)
                shown = online.apply_impression(state, imp, kept=w.impressions_kept,
                                                window_s=w.impression_attribution_s, dedupe=cfg.dedupe_window)
                if shown is not None:
                    b.outcomes.append(shown)
                # Written even for a duplicate, like an interaction's (see above): the re-delivery closes the gap.
                b.states[imp.user_id] = (state, e.ev)
                b.impressed.add(imp.user_id)
                continue
            if not isinstance(e, _Event):
                kind, ev, cmd = e
                user = cmd["user_id"]
                if kind == "forget":
                    old = state_of(user, ev)
                    b.states[user] = (UserState(forgotten_below=max(int(cmd["below"]), old.forgotten_below)), ev)
                    b.touched.pop(user, None)
                    b.forgotten[user] = cmd
                elif kind == "refresh":
                    b.refresh[user] = (ev, cmd)
                else:
                    log.error("unknown user command %r for %s skipped", kind, user)
                continue
            it = e.it
            state = state_of(it.user_id, e.ev)
            if e.origin < state.forgotten_below:
                self.dropped_forgotten += 1  # produced before the user asked to be forgotten
                continue
            if it.item_id in takedowns:  # whether or not Milvus has deleted it yet
                await send_dead_record(e.raw, it.kafka_key(), e.origin_topic, e.origin_partition, e.origin,
                                       "unknown_item", f"item {it.item_id!r} was taken down")
                continue
            item = items.get(it.item_id)
            if item is None:
                b.parks.append(e)
                continue
            ratio = watch_ratio(it, self.ctx.cache.duration(it.item_id))
            ops = ingest_user(state, it.event_id, it.item_id, item.vector, it.type, ratio, it.ts, cfg,
                              self.ctx.cooc)
            b.states[it.user_id] = (state, e.ev)
            if ops is not None:
                click = online.attribute(state, it.item_id, it.type, it.ts, window_s=w.impression_attribution_s)
                if click is not None:
                    b.outcomes.append(click)
                b.ops.extend(wire.SourcedOp(e.src, e.offset, op) for op in ops)
                # The list is tagged with the user's last *applied* event, never a dropped duplicate.
                b.touched[it.user_id] = Touched(state, e.ev, it.event_id, it.ts)
            else:
                log.debug("duplicate event %s for %s: state re-written, list re-published", it.event_id, it.user_id)
                if it.user_id not in b.touched:
                    last = next(reversed(state.recent_event_ids), it.event_id)
                    b.touched[it.user_id] = Touched(state, e.ev, last, state.updated_ts or it.ts)
        return b

    # -- 4. item ops, 5. states ----------------------------------------------------------------
    async def _send_item_ops(self, b: _Batch) -> dict[int, int]:
        """Send the batch's item ops and parked events, await the broker's acks, and apply the ops to the
        replica at once where it can (``ItemReplica.apply_own``). Returns where the ops records end in
        each item-deltas partition (the offset after the batch's record)."""
        n = self.item_partitions
        per_partition: dict[int, list[wire.SourcedOp]] = defaultdict(list)
        for s in b.ops:
            per_partition[partition_for(s.op.item.encode(), n)].append(s)
        send = self._send_item_record
        ops_sent = []  # (value, delivery future) of each item-deltas record
        for q, ops in sorted(per_partition.items()):
            value = wire.encode_ops(ops)
            ops_sent.append((value, await send(topics.item_deltas, value, q)))
        sent = [f for _, f in ops_sent]  # each send's delivery future
        now = time.time()
        for e in b.parks:
            key = e.it.item_id.encode()
            sent.append(await send(topics.item_commands, wire.encode_park(
                e.raw, e.it.item_id, e.it.user_id, e.it.event_id, e.origin_topic, e.origin_partition, e.origin,
                e.parked_at or now), partition_for(key, n), key))
        # Acked by the broker before any state that implies them is written. These records' acks only,
        # not a producer flush: that would also wait for everything else in flight (lists, changelogs).
        if not sent:
            return {}
        await asyncio.gather(*sent)
        ends: dict[int, int] = {}
        replica = self.ctx.replica
        for value, fut in ops_sent:
            md = fut.result()
            ends[md.partition] = md.offset + 1
            replica.apply_own(md.partition, md.offset, value)  # not read back from Kafka to rank with it
        return ends

    async def _send_item_record(self, topic, value: bytes, partition: int, key: bytes | None = None):
        """Queue one item-ops or park record; its delivery future. On the item-ops producer where the
        context has one (streams/items/ops_producer.py: not behind the lists in flight), else Faust's."""
        producer = self.ctx.ops_producer
        if producer is None:
            return await topic.send(key=key, value=value, partition=partition)
        return await producer.send(topic.get_topic_name(), value, partition, key)

    def _write_states(self, b: _Batch) -> None:
        for user in {*b.touched, *b.forgotten, *b.impressed}:
            state, ev = b.states[user]
            with event_scope(ev):
                tables.user_state[user] = state.to_dict()

    async def _forget(self, forgotten: dict[str, dict]) -> None:
        """The forgotten users' vectors out of Milvus and their lists tombstoned (their state is already empty)."""
        mirror = self.ctx.mirror
        for user in forgotten:
            mirror.discard(user)
        await mirror.drain()  # a vector still on its way to Milvus must land before the delete, never after it
        await until_done("forget users in Milvus", lambda: asyncio.to_thread(self.ctx.users.delete, list(forgotten)),
                         self.ctx.settings.worker)
        for user in forgotten:
            # A null value is a tombstone: compaction removes the user's lists from the topic.
            await topics.recommendations.send(key=user.encode(), value=None)
            log.info("forgot user %s", user)

    # -- 6. lists ----------------------------------------------------------------------------
    async def _replica_caught_up(self, log_end: asyncio.Future | None, own_end: dict[int, int]) -> None:
        """Wait until the replica holds the log up to ``log_end`` (where it ended as the batch's item ops went
        out) and the batch's own ops (``own_end``)."""
        w = self.ctx.settings.worker
        if log_end is None:
            return
        targets = dict(await log_end)
        for p, end in own_end.items():
            targets[p] = max(targets.get(p, 0), end)
        if not await self.ctx.replica.caught_up(timeout=w.item_state_wait_s, targets=targets):
            t = time.monotonic()
            if t - self._slow_replica_logged_at >= 60.0:
                self._slow_replica_logged_at = t
                log.warning("the item-state replica did not catch up with the log in %.1f s; ranking with what it "
                            "has (lists may miss other workers' latest events)", w.item_state_wait_s)

    async def refresh_lists(self, touched: dict[str, Touched], early: EarlySearch | None = None) -> None:
        """Rank and publish chunk by chunk, so the first users' lists leave before the last are ranked.
        ``early``: the first chunk's search, already started (used by the first attempt only)."""
        now = max(t.ts for t in touched.values())
        todo = dict(touched)  # a transient failure mid-way retries only the users not yet published
        unused = [early]

        def attempt():
            first, unused[0] = unused[0], None
            return self._publish_lists(todo, now, first)

        await until_done("recommend", attempt, self.ctx.settings.worker)

    async def _publish_lists(self, todo: dict[str, Touched], now: float, early: EarlySearch | None = None) -> None:
        async for group in self.recommender.iter_lists({u: t.state for u, t in todo.items()}, now, early):
            with self.stats.stage("lists: publish"):
                for user, ranked in group.items():
                    t = todo.pop(user)
                    await self.recommender.publish(user, ranked, t.event_id, t.ts)

    async def _refresh(self, b: _Batch) -> None:
        """New-content fan-out: refresh the lists of users the batch did not already re-rank."""
        users: dict[str, UserState] = {}
        for user, (ev, _) in b.refresh.items():
            if user in b.touched or user in b.forgotten:
                continue
            if user in b.states:
                state = b.states[user][0]
            else:
                with event_scope(ev):
                    state = load_state(tables.user_state.get(user))
            if state.n_events:  # a user forgotten since the fan-out asked for them has nothing to refresh
                users[user] = state
        if not users:
            return
        now = max(b.refresh[u][1]["ts"] for u in users)
        lists = await until_done("recommend (fan-out)", lambda: self.recommender.lists_for(users, now),
                                 self.ctx.settings.worker)
        self.stats.count("fan-out lists", len(lists))
        for user, ranked in lists.items():
            cmd = b.refresh[user][1]
            await self.recommender.publish(user, ranked, cmd["event_id"], cmd["ts"])


@dataclass
class _Batch:
    """What applying one batch produced."""

    states: dict[str, tuple[UserState, object]] = field(default_factory=dict)  # user -> (state, event: table scope)
    touched: dict[str, Touched] = field(default_factory=dict)  # users who get a list
    forgotten: dict[str, dict] = field(default_factory=dict)  # user -> forget command
    refresh: dict[str, tuple[object, dict]] = field(default_factory=dict)  # user -> (event, refresh command)
    ops: list[wire.SourcedOp] = field(default_factory=list)  # in stream order
    parks: list[_Event] = field(default_factory=list)  # interactions whose item is not in the catalogue yet
    impressed: set[str] = field(default_factory=set)  # users shown a list (their state is written, no list)
    outcomes: list[online.Shown | online.Click] = field(default_factory=list)  # counted once the states are written
