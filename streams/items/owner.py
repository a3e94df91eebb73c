"""The owner of each item partition: what must happen once per item, by one worker.

The ``item-owner`` agent reads ``item-commands``; the consumer group gives each
partition to one worker, and that worker:

* **parks** interactions that named an item not in the catalogue yet (a video
  takes seconds to encode, and its first views are its cold-start signal), in
  the ``item_owner`` table, and releases them to their user's partition (a
  ``replay`` command on ``user-commands``) when the upload lands (``uploaded``);
  what is still parked after ``park_max_wait_s`` goes to the dead-letter topic
  with stage ``unknown_item``;
* **takes down** items in Milvus, and keeps doing so should an upload of the
  item race the takedown;
* **snapshots** the partition's item state: every ``item_snapshot_every_s`` it
  writes the rows changed since the last snapshot from this worker's replica to
  ``item-state`` (``streams/items/store.py`` explains why any replica may write
  them and why a snapshot cut short is harmless).

Its clock is a ``tick`` record it sends itself into each partition it owns, so
expiry and snapshots run in the partition's own order and table scope.

Side effects go out before the table is written (and the batch is acked only
after both reached Kafka), so a kill at any point repeats a release or a dead
letter at worst; the user agent drops a released interaction it already applied.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from streams import tables, topics
from streams.app import app
from streams.items import wire
from streams.items.exceptions import ItemStateError
from streams.items.partitioning import partition_for
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_record
from streams.services.event_scope import event_scope
from streams.services.retry import until_done

log = logging.getLogger(__name__)


class ItemOwner:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self._snapshot_at: dict[int, float] = {}
        self.user_partitions = ctx.settings.kafka.topics.interactions.partitions

    async def handle(self, events: list) -> None:
        docs = []
        for ev in events:
            try:
                docs.append((ev, wire.decode(ev.message.value)))
            except ItemStateError as exc:
                log.error("item-commands %s[%d]@%d skipped: %s", ev.message.topic, ev.message.partition,
                          ev.message.offset, exc)
        parked_items = {d["item"] for _, d in docs if d["k"] == "park"}
        in_catalogue = await self._in_catalogue(parked_items) if parked_items else set()
        for ev, doc in docs:
            kind = doc["k"]
            if kind == "park":
                await self._park(ev, doc, doc["item"] in in_catalogue)
            elif kind == "uploaded":
                await self._uploaded(ev, doc["item"])
            elif kind == "takedown":
                await self._takedown(ev, doc)
            elif kind == "tick":
                await self._tick(ev)
            else:
                log.error("item-commands: unknown record kind %r skipped", kind)

    # -- parking -------------------------------------------------------------------------
    async def _in_catalogue(self, item_ids: set[str]) -> set[str]:
        rows = await until_done("look up parked items", lambda: asyncio.to_thread(
            self.ctx.items.get, sorted(item_ids)), self.cfg)
        return set(rows)

    async def _park(self, ev, doc: dict, in_catalogue: bool) -> None:
        item = doc["item"]
        with event_scope(ev):
            entry = dict(tables.item_owner.get(item) or {})
        if entry.get("down"):
            await self._dead(doc, f"item {item!r} was taken down")
            return
        if in_catalogue:
            # The upload landed between the user's lookup and now: release at once.
            await self._release([doc])
            return
        parked = entry.setdefault("parked", [])
        origin = (doc["topic"], doc["partition"], doc["offset"])
        if any((p["topic"], p["partition"], p["offset"]) == origin for p in parked):
            return  # the same record parked twice (its user's batch re-delivered after a crash): once is enough
        if len(parked) >= self.cfg.park_max_per_item:
            await self._dead(doc, f"item {item!r} is not in the catalogue and already has "
                                  f"{len(parked)} interactions parked (AVREC_WORKER__PARK_MAX_PER_ITEM)")
            return
        parked.append(doc)
        with event_scope(ev):
            tables.item_owner[item] = entry

    async def _release(self, parked: list[dict]) -> None:
        """Send parked interactions back to their users' partitions, to be applied there."""
        for doc in parked:
            cmd = {"command": "replay", "user_id": doc["user"], "event_id": doc["event_id"], "raw": doc["raw"],
                   "topic": doc["topic"], "partition": doc["partition"], "offset": doc["offset"],
                   "parked_at": doc["parked_at"], "released_at": time.time()}
            key = doc["user"].encode()
            await topics.user_commands.send(key=key, value=orjson.dumps(cmd),
                                            partition=partition_for(key, self.user_partitions))
        if parked:
            log.info("released %d parked interaction(s) for item %s", len(parked), parked[0]["item"])

    async def _dead(self, doc: dict, reason: str) -> None:
        await send_dead_record(wire.parked_raw(doc), doc["user"].encode(), doc["topic"], doc["partition"],
                               doc["offset"], "unknown_item", reason)

    async def _uploaded(self, ev, item: str) -> None:
        with event_scope(ev):
            entry = dict(tables.item_owner.get(item) or {})
        if entry.get("down"):
            # The upload raced its takedown and reached Milvus after it: remove it again.
            await until_done("delete taken-down item", lambda: asyncio.to_thread(self.ctx.items.delete, [item]),
                             self.cfg)
            return
        parked = entry.pop("parked", [])
        if not parked:
            return
        await self._release(parked)
        await app.producer.flush()  # released before forgotten here
        with event_scope(ev):
            if entry:
                tables.item_owner[item] = entry
            else:
                del tables.item_owner[item]

    async def _takedown(self, ev, doc: dict) -> None:
        item = doc["item"]
        with event_scope(ev):
            entry = dict(tables.item_owner.get(item) or {})
        for p in entry.pop("parked", []):
            await self._dead(p, f"item {item!r} was taken down")
        await until_done("delete taken-down item", lambda: asyncio.to_thread(self.ctx.items.delete, [item]),
                         self.cfg)
        await app.producer.flush()
        with event_scope(ev):
            tables.item_owner[item] = {"down": True, "ts": doc.get("ts"), "reason": doc.get("reason")}
        log.info("item %s taken down (%s)", item, doc.get("reason") or "no reason given")

    async def _tick(self, ev) -> None:
        q = ev.message.partition
        await self._expire(ev, q)
        now = time.monotonic()
        if now - self._snapshot_at.get(q, 0.0) >= self.cfg.item_snapshot_every_s:
            self._snapshot_at[q] = now
            await write_snapshot(self.ctx, q)

    async def _expire(self, ev, q: int) -> None:
        """Release what is parked for items now in Milvus (a missed or raced upload), dead-letter what waited too long."""
        n = self.ctx.settings.kafka.item_partitions
        with event_scope(ev):
            waiting = {k: v for k, v in tables.item_owner.items()
                       if v and v.get("parked") and partition_for(k.encode(), n) == q}
        if not waiting:
            return
        found = await self._in_catalogue(set(waiting))
        cutoff = time.time() - self.cfg.park_max_wait_s
        changed: dict[str, dict] = {}
        for item, entry in waiting.items():
            entry = dict(entry)
            if item in found:
                await self._release(entry.pop("parked"))
            else:
                keep = []
                for p in entry["parked"]:
                    if p["parked_at"] < cutoff:
                        await self._dead(p, f"item {item!r} is not in the catalogue after "
                                            f"{self.cfg.park_max_wait_s:.0f} s (AVREC_WORKER__PARK_MAX_WAIT_S)")
                    else:
                        keep.append(p)
                if len(keep) == len(entry["parked"]):
                    continue
                entry["parked"] = keep
            changed[item] = entry
        await app.producer.flush()
        with event_scope(ev):
            for item, entry in changed.items():
                if entry.get("parked") or entry.get("down"):
                    tables.item_owner[item] = entry
                else:
                    del tables.item_owner[item]


async def write_snapshot(ctx: WorkerContext, q: int, chunk: int = 500) -> int:
    """Write partition ``q``'s rows changed since its last snapshot to ``item-state``, then its ``pos``
    record and the ``snap`` marker (see streams/items/store.py). Returns the rows written."""
    store = ctx.store
    upto = store.position[q] - 1
    items = store.changed_since_snapshot(q)
    if upto < 0 or not items:
        return 0
    for k, item in enumerate(items):
        # Serialised one at a time: a row the replica changes meanwhile is written ahead of `upto`,
        # and stays marked changed for the next snapshot.
        await topics.item_state.send(key=item.encode(), value=store.item_record(item), partition=q)
        if k % chunk == chunk - 1:
            await asyncio.sleep(0)
    await topics.item_state.send(key=wire.POS_KEY, value=orjson.dumps({"upto": upto}), partition=q)
    await app.producer.flush()  # the rows are in item-state before the log says so
    await topics.item_deltas.send(key=None, value=wire.encode_snap(upto), partition=q)
    log.info("item-state snapshot of partition %d: %d rows up to offset %d", q, len(items), upto)
    return len(items)


def start_ticks(ctx: WorkerContext) -> asyncio.Task:
    """Send a ``tick`` into each item-commands partition this worker owns, every ``item_tick_s``."""
    name = topics.item_commands.get_topic_name()

    async def run() -> None:
        while True:
            await asyncio.sleep(ctx.settings.worker.item_tick_s)
            try:
                mine = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name)
                for q in mine:
                    await topics.item_commands.send(key=None, value=wire.encode_tick(time.time()), partition=q)
            except Exception:  # noqa: BLE001 - a background task has no caller to raise to
                log.exception("could not send the item owners' ticks; trying again in %.0f s",
                              ctx.settings.worker.item_tick_s)

    return asyncio.get_running_loop().create_task(run(), name="item-owner-ticks")
