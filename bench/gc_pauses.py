"""The generator's own garbage-collection pauses during a measured phase.

The generator timestamps each list in its receiver thread, as it polls it. A full
collection of the generator's heap (the replayed log, the events, every send and
receive time) would stop that thread as well, and every list arriving meanwhile
would look late by the pause: a stall of the load generator, charged to the system
it measures. A synthetic heap of ~2M objects takes ~230 ms to collect on this
machine, the size of the paced phase's worst stalls, so each phase times the
generator's collections and reports them beside its latencies (session 15: the
paced phases saw 2-6 young collections of at most 0.4 ms, and no full one).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator


class GcPauses:
    """A ``gc.callbacks`` hook: each collection's start on the perf clock, length and generation."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []  # (start, ms, generation)
        self._started: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses.append((self._started, (time.perf_counter() - self._started) * 1000, info["generation"]))
            self._started = None

    def report(self, t0: float, slow_ms: float = 10.0) -> dict:
        """Counts, the longest pause, and every pause of ``slow_ms`` or more (seconds into the phase, ms,
        generation): a latency tail bunched at one of those moments is the generator's, not the system's."""
        return {
            "collections": len(self.pauses),
            "full_collections": sum(1 for _, _, g in self.pauses if g == 2),
            "max_ms": round(max((ms for _, ms, _ in self.pauses), default=0.0), 1),
            "slow": [[round(t - t0, 2), round(ms, 1), g] for t, ms, g in self.pauses if ms >= slow_ms],
        }


@contextlib.contextmanager
def watched_collections() -> Iterator[GcPauses]:
    """Time the generator's collections for the ``with`` block."""
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(pauses)
