"""The user-vector mirror starts a Milvus write at most once per ``user_mirror_every_s``.

The writes themselves are exercised against a real Milvus in
tests/integration/test_milvus.py; this pins the scheduling with a recording
collection, since it is about *when* writes start.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from streams.services.user_mirror import UserVectorMirror
from streams.settings import WorkerSettings


class RecordingUsers:
    def __init__(self) -> None:
        self.writes: list[tuple[float, set[str]]] = []

    def upsert(self, rows: dict, ts_ms: int) -> int:
        self.writes.append((time.monotonic(), set(rows)))
        return len(rows)


def test_offers_within_the_interval_are_coalesced_into_the_next_write():
    users = RecordingUsers()
    v = np.ones(4, np.float32)

    async def scenario() -> None:
        mirror = UserVectorMirror(users, WorkerSettings(user_mirror_every_s=0.3))
        mirror.offer({"a": v})  # written at once: nothing written yet
        await asyncio.sleep(0.05)
        for u in ("b", "c", "d"):  # one batch each, like a lightly loaded worker
            mirror.offer({u: v})
            await asyncio.sleep(0.02)
        await mirror.drain()

    asyncio.run(scenario())
    assert [rows for _, rows in users.writes] == [{"a"}, {"b", "c", "d"}]
    assert users.writes[1][0] - users.writes[0][0] >= 0.29


def test_zero_interval_writes_as_soon_as_the_previous_write_is_done():
    users = RecordingUsers()
    v = np.ones(4, np.float32)

    async def scenario() -> None:
        mirror = UserVectorMirror(users, WorkerSettings(user_mirror_every_s=0))
        for u in ("a", "b"):
            mirror.offer({u: v})
            await asyncio.sleep(0.05)
        await mirror.drain()

    asyncio.run(scenario())
    assert [rows for _, rows in users.writes] == [{"a"}, {"b"}]
