"""Mirror users' taste vectors into Milvus ``users`` in the background, coalesced.

The mirror only serves the new-upload fan-out ("which users would like this new
item?"); the user-state table stays the source of truth. A Milvus Lite upsert
costs 60-200 ms, and awaiting it in every batch held the interaction agent for
that long, so instead:

* ``offer`` records the newest vector per user and returns at once;
* one background task writes whatever is pending in one upsert, then the next,
  so at most one write is in flight and a hot user costs one row per write;
* writes start at most once per ``user_mirror_every_s`` (1 s). Without that pause,
  a worker at low load wrote one upsert per batch of one or two events. Each
  upsert of an existing user is a delete plus an insert in Milvus, and at
  50 events/s, with 10k known users, the Milvus Lite server spent ~40% of a
  core on them, competing with the searches. The fan-out reads vectors at
  most a second stale, which does not matter for "who would like this new item";
* transient Milvus failures are retried (``until_done``) with the rows kept.

After a ``kill -9`` the rows of the last write or two may be missing; the
interaction path re-offers a user's vector whenever an event of theirs arrives,
re-delivered duplicates included, so the mirror heals on the user's next event.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from streams.services.retry import until_done
from streams.settings import WorkerSettings
from streams.vectors.collections import UserCollection

log = logging.getLogger(__name__)


class UserVectorMirror:
    def __init__(self, users: UserCollection, cfg: WorkerSettings) -> None:
        self.users = users
        self.cfg = cfg
        self._pending: dict[str, np.ndarray] = {}
        self._task: asyncio.Task | None = None
        self._next_write = 0.0  # time.monotonic() before which no write starts
        self.rows_written = 0

    def offer(self, vectors: dict[str, np.ndarray]) -> None:
        if not vectors:
            return
        self._pending.update(vectors)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_pending(), name="user-vector-mirror")

    def discard(self, user_id: str) -> None:
        """Drop a pending row (a forgotten user must not be written back)."""
        self._pending.pop(user_id, None)

    async def drain(self) -> None:
        """Wait until everything offered so far is in Milvus (shutdown, forget-me, tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _write_pending(self) -> None:
        while self._pending:
            wait = self._next_write - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # offers keep coalescing meanwhile
                if not self._pending:  # all discarded while waiting
                    break
            self._next_write = time.monotonic() + self.cfg.user_mirror_every_s
            rows, self._pending = self._pending, {}
            try:
                await until_done("mirror user vectors", lambda: asyncio.to_thread(
                    self.users.upsert, rows, int(time.time() * 1000)), self.cfg)
            except asyncio.CancelledError:
                # Shutting down: keep what was not written so a later drain can still try.
                for user, vec in rows.items():
                    self._pending.setdefault(user, vec)
                raise
            except Exception:  # noqa: BLE001 - a background task has no caller to raise to
                log.exception("could not mirror %d user vectors into Milvus; they are re-offered on "
                              "each user's next event", len(rows))
                continue
            self.rows_written += len(rows)
