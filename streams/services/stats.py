"""Where a worker's batches spend their time, logged as one line every ``every_s`` seconds.

Operators see throughput and the per-stage split without a profiler, e.g.
``interactions: 512 events/s over 30.0s (2048 batches); per batch ms: state 3.1,
search 9.8, rank 12.0, publish 1.2; per batch: lists 3.8, item fetches 0.4``.
The benchmark reads the same line; the counts say why a batch costs what it does
(a list per event when users rarely repeat within a batch, a cold item cache).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class BatchStats:
    def __init__(self, name: str, every_s: float = 30.0) -> None:
        self.name = name
        self.every_s = every_s
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self._since = now
        self._batches = 0
        self._events = 0
        self._stage_s: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._stage_s[name] += time.perf_counter() - t0

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the counter ``name`` (reported per batch, e.g. lists ranked)."""
        self._counts[name] += n

    def batch_done(self, events: int) -> None:
        self._batches += 1
        self._events += events
        now = time.monotonic()
        span = now - self._since
        if span >= self.every_s:
            per_batch = ", ".join(f"{k} {v * 1000 / self._batches:.1f}" for k, v in self._stage_s.items())
            counts = ", ".join(f"{k} {v / self._batches:.1f}" for k, v in self._counts.items())
            log.info("%s: %.0f events/s over %.1fs (%d batches, %.1f events each); per batch ms: %s%s",
                     self.name, self._events / span, span, self._batches, self._events / self._batches, per_batch,
                     f"; per batch: {counts}" if counts else "")
            self._reset(now)
