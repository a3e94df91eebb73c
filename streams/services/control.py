"""Operator commands: item takedown, user forget-me, routed to the owners of the item and the user.

The control topic has one partition; what a command changes is owned elsewhere:

* a takedown goes into the item-state log (``down``: every worker's replica drops
  the item from its candidates, trending, fresh window and cache) and to the
  item's owner (``takedown``: Milvus, and what is parked for the item);
* a forget-me goes to the user's partition of ``user-commands``, which the user
  agent reads in one stream with the user's events, so it is never handled
  while a batch of that user's events is in flight. It carries where the user's
  interactions partition ended when the command was routed: events produced
  before the forget that are still on their way are erased too.
"""

from __future__ import annotations

import logging
import time

import orjson

from streams import topics
from streams.items import wire
from streams.items.partitioning import partition_for
from streams.records import RecordError, decode_control
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_letter

log = logging.getLogger(__name__)


class ControlProcessor:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        k = ctx.settings.kafka
        self.item_partitions = k.item_partitions
        self.user_partitions = k.topics.interactions.partitions
        self.interactions_topic = k.topics.interactions.name

    async def handle(self, events: list) -> None:
        for ev in events:
            try:
                cmd = decode_control(ev.message.value)
            except RecordError as exc:
                await send_dead_letter(ev, exc.stage, exc.reason)
                continue
            key = cmd.kafka_key()
            if ev.message.key != key:
                await send_dead_letter(ev, "key", f"record key {ev.message.key!r} is not the command's target "
                                                  f"{key.decode()!r} (key control records by item_id / user_id)")
                continue
            if cmd.action == "takedown":
                q = partition_for(key, self.item_partitions)
                await topics.item_deltas.send(key=key, value=wire.encode_down(cmd.item_id), partition=q)
                await topics.item_commands.send(key=key, value=wire.encode_takedown(cmd.item_id, cmd.ts, cmd.reason),
                                                partition=q)
            else:
                p = partition_for(key, self.user_partitions)
                below = await self.ctx.replica.user_topic_end(self.interactions_topic, p)
                request = {"command": "forget", "user_id": cmd.user_id, "event_id": cmd.event_id, "ts": cmd.ts,
                           "below": below, "requested_at": time.time()}
                await topics.user_commands.send(key=key, value=orjson.dumps(request), partition=p)
