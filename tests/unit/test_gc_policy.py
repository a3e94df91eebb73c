"""The worker's garbage-collector policy: freeze the long-lived heap, collect it fully now and then."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from streams.services.gc_policy import full_collect, run_gc_policy, start_gc_policy


@pytest.fixture
def clean_gc():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_policy_freezes_the_heap_and_full_collections_free_frozen_cycles(clean_gc):
    async def main() -> int:
        task = asyncio.get_running_loop().create_task(run_gc_policy(0.01, 0.05))
        await asyncio.sleep(0.03)
        frozen = gc.get_freeze_count()
        task.cancel()
        return frozen

    assert asyncio.run(main()) > 0  # survivors moved to the permanent generation

    gc.unfreeze()
    cycle = Cycle()
    alive = weakref.ref(cycle)
    gc.freeze()  # a long-lived object, frozen while still in use
    del cycle  # ...then garbage, but a cycle: reference counting cannot free it
    gc.collect()
    assert alive() is not None  # the collector skips frozen objects
    freed, took = full_collect()
    assert alive() is None and freed >= 1 and took >= 0
    assert gc.get_freeze_count() == 0


def test_zero_interval_keeps_cpythons_default_collector(clean_gc):
    async def main():
        return start_gc_policy(0, 900)

    assert asyncio.run(main()) is None
    assert gc.get_freeze_count() == 0
