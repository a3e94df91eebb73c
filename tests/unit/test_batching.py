"""take_ready (streams/batching.py) on a real Faust stream: natural batching, acks only once settled.

The stream reads an in-memory Faust channel (no broker is contacted: nothing here
produces or commits; an ack is Faust's own bookkeeping on the message).
"""

from __future__ import annotations

import asyncio

import faust
import pytest

from streams.batching import take_ready

# An idle agent's linger that no test may wait out: a batch taken without it shows it was skipped.
FOREVER_S = 3600.0
GUARD_S = 20.0  # how long a test waits for a step before calling it hung (a failure, not a timing)


@pytest.fixture
async def stream():
    app = faust.App("test-batching", broker="kafka://127.0.0.1:1")  # never connected
    app.flow_control.resume()
    s = app.stream(app.channel(maxsize=1000))
    async with s:
        yield s


async def put(stream, *values) -> None:
    for v in values:
        await stream.channel.send(value=v)


def acked(batch) -> list[bool]:
    return [bool(e.message.acked) for e in batch]


async def test_a_busy_agent_takes_what_arrived_meanwhile_at_once(stream):
    release = asyncio.Event()
    seen: list[list[int]] = []

    async def consume():
        async for batch in take_ready(stream, 5, FOREVER_S):
            seen.append([e.value for e in batch])
            if len(seen) == 1:
                await release.wait()  # busy with the first batch while more arrive
            if len(seen) == 2:
                return

    task = asyncio.ensure_future(consume())
    await put(stream, 0, 1, 2, 3, 4)  # a full batch: taken without lingering
    while not seen:
        await asyncio.sleep(0.001)
    await put(stream, 5, 6, 7)  # arrive while the agent is busy
    for _ in range(20):  # the stream moves them from its channel into the batch buffer meanwhile
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.wait_for(task, GUARD_S)  # with the linger paid, this would hang an hour
    assert seen == [[0, 1, 2, 3, 4], [5, 6, 7]]  # not full, yet taken as soon as the agent was free


async def test_batches_hold_at_most_max_size_in_order_and_lose_nothing(stream):
    seen: list[list[int]] = []

    async def consume():
        async for batch in take_ready(stream, 3, 0.0):
            seen.append([e.value for e in batch])
            await asyncio.sleep(0.01)  # busy: the buffer fills, then holds the stream
            if sum(map(len, seen)) == 20:
                return

    task = asyncio.ensure_future(consume())
    await put(stream, *range(20))
    await asyncio.wait_for(task, GUARD_S)
    assert [v for b in seen for v in b] == list(range(20))
    assert max(map(len, seen)) == 3 and all(seen)


async def test_an_idle_agent_lingers_for_more_after_the_first_event(stream):
    seen: list[list[int]] = []

    async def consume():
        async for batch in take_ready(stream, 4, FOREVER_S):
            seen.append([e.value for e in batch])
            return

    task = asyncio.ensure_future(consume())
    await put(stream, 0)
    for _ in range(20):  # the agent had every chance to take the lone event
        await asyncio.sleep(0.005)
    assert not seen  # still lingering: a burst shares its batch
    await put(stream, 1, 2, 3)  # fills the batch: taken at once
    await asyncio.wait_for(task, GUARD_S)
    assert seen == [[0, 1, 2, 3]]


async def test_a_batch_is_acked_only_after_its_settle_which_overlaps_the_next_batch(stream):
    settle_started = asyncio.Event()
    settle_may_end = asyncio.Event()
    settles = 0
    batches: list = []
    checked: dict[str, object] = {}

    async def settle():
        nonlocal settles
        settles += 1
        settle_started.set()
        await settle_may_end.wait()

    async def consume():
        async for batch in take_ready(stream, 2, 0.0, settle=settle):
            batches.append(batch)
            if len(batches) == 1:
                assert not any(acked(batch))  # being processed: not acked
            if len(batches) == 2:
                # The first batch's settle runs while this one is processed; its events wait for it.
                await asyncio.wait_for(settle_started.wait(), GUARD_S)
                checked["first acked while settling"] = any(acked(batches[0]))
                settle_may_end.set()
                for _ in range(100):
                    if all(acked(batches[0])):
                        break
                    await asyncio.sleep(0.001)
                checked["first acked once settled"] = all(acked(batches[0]))
                checked["second acked"] = any(acked(batch))
                return

    task = asyncio.ensure_future(consume())
    await put(stream, 0, 1, 2, 3)
    await asyncio.wait_for(task, GUARD_S)
    assert checked == {"first acked while settling": False, "first acked once settled": True,
                       "second acked": False}
    assert settles == 1  # the second batch's body never returned: it is not settled, nor acked
    assert not any(acked(batches[1]))


async def test_a_failed_settle_is_raised_and_its_events_never_acked(stream):
    batches: list = []

    async def settle():
        raise RuntimeError("the producer could not deliver")

    async def consume():
        async for batch in take_ready(stream, 1, 0.0, settle=settle):
            batches.append(batch)

    task = asyncio.ensure_future(consume())
    await put(stream, 0, 1)
    with pytest.raises(RuntimeError, match="could not deliver"):
        await asyncio.wait_for(task, GUARD_S)
    assert [e.value for b in batches for e in b] == [0, 1]
    assert not any(acked(batches[0]))


async def test_a_batch_whose_body_raises_is_not_acked(stream):
    batches: list = []

    async def consume():
        async for batch in take_ready(stream, 2, 0.0):
            batches.append(batch)
            raise KeyError("a bug past the handlers' safety net")

    task = asyncio.ensure_future(consume())
    await put(stream, 0, 1)
    with pytest.raises(KeyError):
        await asyncio.wait_for(task, GUARD_S)
    assert not any(acked(batches[0]))  # Kafka delivers it again


def test_max_size_must_be_positive():
    async def main():
        async for _ in take_ready(object(), 0, 0.0):  # type: ignore[arg-type]
            pass

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(main())
