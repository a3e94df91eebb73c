"""Where a worker's batches spend their time, logged as one line every ``every_s`` seconds.

Operators see throughput and the per-stage split without a profiler, e.g.
``interactions: 512 events/s over 30.0s (2048 batches); per batch ms: state 3.1,
search 9.8, rank 12.0, publish 1.2; per batch: lists 3.8, item fetches 0.4``.
The benchmark reads the same line; the counts say why a batch costs what it does
(a list per event when users rarely repeat within a batch, a cold item cache).
A second line names the period's slowest batch and its stages: a latency tail
is usually a few slow batches, and their split says which round trip stalled.
A stage named ``"outer: part"`` is a part of stage ``outer`` (e.g. ``lists:
search wait``): reported like the others, not added again to a batch's time.
``queued`` adds how long the events waited before their batch began (from
their Kafka timestamps): the part of an event's latency no stage shows.
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
        self._batch_s: dict[str, float] = defaultdict(float)  # the current batch's stages
        self._slowest: tuple[float, dict[str, float], int] = (0.0, {}, 0)  # (seconds, stages, events)
        self._queued = [0.0, 0, 0.0]  # seconds summed, events, the longest

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - t0
            self._stage_s[name] += took
            self._batch_s[name] += took

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the counter ``name`` (reported per batch, e.g. lists ranked)."""
        self._counts[name] += n

    def queued(self, waits_s: list[float]) -> None:
        """How long each of a batch's events waited, from its Kafka timestamp to the batch's start."""
        if waits_s:
            q = self._queued
            q[0] += sum(waits_s)
            q[1] += len(waits_s)
            q[2] = max(q[2], max(waits_s))

    def batch_done(self, events: int) -> None:
        self._batches += 1
        self._events += events
        took = sum(v for k, v in self._batch_s.items() if ": " not in k)  # parts are inside their stage
        if took > self._slowest[0]:
            self._slowest = (took, dict(self._batch_s), events)
        self._batch_s.clear()
        now = time.monotonic()
        span = now - self._since
        if span >= self.every_s:
            per_batch = ", ".join(f"{k} {v * 1000 / self._batches:.1f}" for k, v in self._stage_s.items())
            counts = ", ".join(f"{k} {v / self._batches:.1f}" for k, v in self._counts.items())
            total, n, longest = self._queued
            queued = f"; queued ms: mean {total * 1000 / n:.1f}, max {longest * 1000:.1f}" if n else ""
            log.info("%s: %.0f events/s over %.1fs (%d batches, %.1f events each); per batch ms: %s%s%s",
                     self.name, self._events / span, span, self._batches, self._events / self._batches, per_batch,
                     f"; per batch: {counts}" if counts else "", queued)
            took, stages, n = self._slowest
            if took > 0:
                split = ", ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]))
                log.info("%s: slowest batch %.1f ms (%d events): %s", self.name, took * 1000, n, split)
            self._reset(now)
