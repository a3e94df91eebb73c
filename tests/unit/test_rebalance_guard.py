"""The rebalance guard's rules: a partition's events in offset order, from this generation's seek on.

Faust's own objects are reduced to what the guard reads (a message's partition,
offset and generation; the app's generation; the consumer's seek); the real
thing runs in tests/reliability/test_worker_crash_replay.py, where Faust skipped
and reordered records after rebalances until this guard existed.
"""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from streams.services.rebalance_guard import RebalanceGuard

A, B = TP("interactions", 0), TP("interactions", 1)


class Consumer:
    def __init__(self) -> None:
        self._unacked_messages: set = set()
        self.seeks: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def guard(generation: int = 1, log: dict | None = None) -> RebalanceGuard:
    app = SimpleNamespace(consumer_generation_id=generation, consumer=Consumer())
    g = RebalanceGuard(app, kafka=None if log is None else object())
    if log is not None:  # the broker's view of each partition: the offsets that exist
        async def first_offset(tp, offset):
            return min((o for o in log[tp] if o >= offset), default=offset)
        g._first_offset = first_offset
    return g


class Msg:
    def __init__(self, tp: TP, offset: int, generation: int | None = 1) -> None:
        self.tp, self.offset, self.generation_id, self.acked = tp, offset, generation, False

    def __hash__(self) -> int:
        return id(self)


def evs(*specs) -> list:
    return [SimpleNamespace(message=Msg(*spec)) for spec in specs]


def offsets(events) -> list[tuple[int, int]]:
    return [(e.message.tp.partition, e.message.offset) for e in events]


async def test_nothing_before_this_generations_seek_then_in_order_from_the_sought_offset():
    g = guard(log={A: set(range(100)), B: set(range(7, 100))})
    early = evs((A, 45), (A, 46))
    assert await g.in_order(early) == []  # flow resumed before the seek: these are read again
    assert all(e.message.acked for e in early)  # so Faust's ack bookkeeping skips them
    g.on_seek({A: 40, B: None})
    got = await g.in_order(evs((A, 40), (A, 41), (B, 7), (B, 8)))
    assert offsets(got) == [(0, 40), (0, 41), (1, 7), (1, 8)]
    assert offsets(await g.in_order(evs((A, 41), (A, 42)))) == [(0, 42)]  # 41 again: taken already
    assert g.dropped == 3 and g.app.consumer.seeks == []


async def test_a_record_fetched_before_the_seek_but_handed_over_after_it_waits_for_its_turn():
    g = guard(log={A: set(range(100))})
    g.on_seek({A: 40})
    # 45 was in flight when the seek went back to 40: the partition is read again from 40.
    assert await g.in_order(evs((A, 45), (A, 40), (A, 41))) == []
    assert g.app.consumer.seeks == [(A, 40)]
    assert offsets(await g.in_order(evs((A, 40), (A, 41), (A, 45)))) == [(0, 40), (0, 41)]  # 45 still early
    assert offsets(await g.in_order(evs((A, 42), (A, 43), (A, 44), (A, 45)))) == [(0, 42), (0, 43), (0, 44),
                                                                                 (0, 45)]


async def test_events_of_an_older_generation_are_dropped():
    g = guard(generation=3)
    g.on_seek({A: 10})
    assert offsets(await g.in_order(evs((A, 10, 2), (A, 10, 3)))) == [(0, 10)]
    g.app.consumer_generation_id = 4  # a rebalance: nothing until its seek
    assert await g.in_order(evs((A, 11, 4))) == []
    g.on_seek({A: 11})
    assert offsets(await g.in_order(evs((A, 11, 4)))) == [(0, 11)]


async def test_records_skipped_by_the_consumer_are_read_again_before_anything_after_them():
    g = guard(log={A: set(range(100))})
    g.on_seek({A: 10})
    assert offsets(await g.in_order(evs((A, 10), (A, 11)))) == [(0, 10), (0, 11)]
    assert await g.in_order(evs((A, 15), (A, 16))) == []  # 12..14 went missing
    assert g.app.consumer.seeks == [(A, 12)] and g.reread == 1
    assert await g.in_order(evs((A, 17))) == []  # fetched before the seek back: comes again, no second seek
    assert g.app.consumer.seeks == [(A, 12)]
    assert offsets(await g.in_order(evs((A, 12), (A, 13), (A, 14), (A, 15)))) == [(0, 12), (0, 13), (0, 14), (0, 15)]


async def test_a_partition_with_no_committed_offset_starts_at_its_first_record():
    g = guard(log={A: set(range(3, 50))})  # records before 3 deleted by retention
    g.on_seek({A: None})
    assert await g.in_order(evs((A, 5))) == []  # 3 and 4 were skipped: read again
    assert g.app.consumer.seeks == [(A, 3)]
    assert offsets(await g.in_order(evs((A, 3), (A, 4), (A, 5)))) == [(0, 3), (0, 4), (0, 5)]


async def test_a_real_gap_in_the_log_is_stepped_over():
    g = guard(log={A: {10, 11, 14, 15}})  # 12, 13: e.g. transaction markers
    g.on_seek({A: 10})
    got = await g.in_order(evs((A, 10), (A, 11), (A, 14), (A, 15)))
    assert offsets(got) == [(0, 10), (0, 11), (0, 14), (0, 15)] and g.app.consumer.seeks == []
