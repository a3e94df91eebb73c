"""Per-user commands on the internal, co-partitioned topic: fan-out refreshes and forget-me."""

from __future__ import annotations

import asyncio
import logging

import orjson

from streams import tables, topics
from streams.ranking import UserState
from streams.services.context import WorkerContext
from streams.services.event_scope import event_scope
from streams.services.recommender import Recommender
from streams.services.retry import until_done

log = logging.getLogger(__name__)


class UserCommandProcessor:
    def __init__(self, ctx: WorkerContext, recommender: Recommender) -> None:
        self.ctx = ctx
        self.recommender = recommender

    async def handle(self, events: list) -> None:
        refresh: dict[str, tuple[UserState, dict]] = {}
        for ev in events:
            cmd = orjson.loads(ev.message.value)
            user = cmd["user_id"]
            with event_scope(ev):
                if cmd["command"] == "forget":
                    await self._forget(user)
                    refresh.pop(user, None)
                    continue
                raw = tables.user_state.get(user)
            if raw:  # a user forgotten since the fan-out asked for them has nothing to refresh
                refresh[user] = (UserState.from_dict(raw), cmd)
        if not refresh:
            return
        now = max(c["ts"] for _, c in refresh.values())
        lists = await until_done("recommend (fan-out)", lambda: self.recommender.lists_for(
            {u: s for u, (s, _) in refresh.items()}, now), self.ctx.settings.worker)
        for user, ranked in lists.items():
            cmd = refresh[user][1]
            await self.recommender.publish(user, ranked, cmd["event_id"], cmd["ts"])

    async def _forget(self, user: str) -> None:
        """Delete the user's state (a changelog tombstone), vector and published list."""
        if user in tables.user_state:
            del tables.user_state[user]
        # A vector still on its way to Milvus must land before the delete, never after it.
        self.ctx.mirror.discard(user)
        await self.ctx.mirror.drain()
        await until_done("forget user in Milvus", lambda: asyncio.to_thread(self.ctx.users.delete, [user]),
                         self.ctx.settings.worker)
        # A null value is a tombstone: compaction removes the user's lists from the topic.
        await topics.recommendations.send(key=user.encode(), value=None)
        log.info("forgot user %s", user)
