"""Operator commands: item takedown, user forget-me."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from streams import tables, topics
from streams.records import RecordError, decode_control
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_letter
from streams.services.event_scope import event_scope
from streams.services.retry import until_done

log = logging.getLogger(__name__)


class ControlProcessor:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, events: list) -> None:
        for ev in events:
            try:
                cmd = decode_control(ev.message.value)
            except RecordError as exc:
                await send_dead_letter(ev, exc.stage, exc.reason)
                continue
            if cmd.action == "takedown":
                await self._takedown(ev, cmd.item_id, cmd.ts, cmd.reason)
            else:
                # The user's state lives in the partition that owns them: route the request there.
                request = {"command": "forget", "user_id": cmd.user_id, "event_id": cmd.event_id,
                           "ts": cmd.ts, "requested_at": time.time()}
                await topics.user_commands.send(key=cmd.user_id.encode(), value=orjson.dumps(request))

    async def _takedown(self, ev, item_id: str, ts: float, reason: str | None) -> None:
        """Remove the item from Milvus and from every future list (the takedowns table filters it)."""
        with event_scope(ev):
            tables.takedowns[item_id] = {"ts": ts, "reason": reason}
        self.ctx.takedowns.add([item_id])
        await until_done("delete taken-down item", lambda: asyncio.to_thread(self.ctx.items.delete, [item_id]),
                         self.ctx.settings.worker)
        self.ctx.cache.drop(item_id)
        self.ctx.fresh.remove(item_id)
        self.ctx.trending.remove(item_id)
        self.ctx.cooc.remove(item_id)
        log.info("item %s taken down (%s)", item_id, reason or "no reason given")
