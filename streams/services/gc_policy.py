"""Keep CPython's full garbage collections from stalling the worker.

The worker keeps hundreds of thousands of long-lived objects (the item cache's
``ItemInfo`` rows, decoded table rows, Faust's own state). A full (generation 2)
collection walks every one of them, and under load it ran every ~3.5 s and took
180-260 ms each time, finding nothing to free (0-10 objects): a quarter-second
stall of every list in flight, and ~7% of the worker's time
(docs/PERFORMANCE.md, "Garbage-collector pauses").

The cure is the one CPython provides for long-lived heaps, ``gc.freeze()``: every
``freeze_every_s`` the objects alive so far move to a permanent generation that
the cyclic collector skips, so each collection only walks what was allocated
since. Reference counting still frees frozen objects the moment they are
unreferenced; only garbage *cycles* among frozen objects wait, until the next
full collection, which runs every ``full_collect_every_s`` (unfreeze, collect,
log how long it took). That bounds both the memory such cycles can hold and how
often the worker pays one full pause.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)


def full_collect() -> tuple[int, float]:
    """Unfreeze everything and run one full collection: (objects freed, seconds taken)."""
    gc.unfreeze()
    t0 = time.perf_counter()
    freed = gc.collect()
    return freed, time.perf_counter() - t0


async def run_gc_policy(freeze_every_s: float, full_collect_every_s: float) -> None:
    """Freeze the heap every ``freeze_every_s``; a full collection every ``full_collect_every_s`` (runs forever)."""
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every_s)
        if time.monotonic() - last_full >= full_collect_every_s:
            freed, took = full_collect()
            last_full = time.monotonic()
            log.info("full garbage collection: %d objects freed in %.0f ms", freed, took * 1e3)
        gc.freeze()


def start_gc_policy(freeze_every_s: float, full_collect_every_s: float) -> asyncio.Task | None:
    """Start the policy on the running loop (``freeze_every_s`` 0: CPython's default collector, no task)."""
    if freeze_every_s <= 0:
        return None
    return asyncio.get_running_loop().create_task(run_gc_policy(freeze_every_s, full_collect_every_s),
                                                  name="gc-policy")
