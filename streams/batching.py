"""Batches that leave as soon as the agent is free: what the interactions agent reads with.

Faust's ``Stream.take_events(max_, within)`` holds the stream while a batch is
processed (its buffer takes one event, then waits), and after each batch it
waits ``within`` seconds for more unless ``max_`` events are buffered. Under a
steady load that wait is paid on every batch, by every event of it: at 1,000
events/s a batch took ~34 ms and the next one started ~47 ms later (10 ms of
``within``, ~3 ms flushing the producer before the acks).

:func:`take_ready` batches the way a server does when it is busy ("natural"
batching):

* the buffer keeps filling while a batch is processed, up to ``max_size``;
* a batch is yielded as soon as the previous one is done, with whatever arrived
  meanwhile; only an agent that found nothing waiting lingers, ``linger_s`` after
  the first event (or until ``max_size``), so a burst still shares its round
  trips;
* ``settle`` (the producer flush that must precede the acks, see
  ``streams/services/changelog.py``) runs while the next batch is processed, and
  the batch's events are acked only when it has finished. At most one settle is
  in flight: the next batch's waits for it, so acks stay in order.

An event is acked only after its batch's body returned normally and its settle
succeeded. A failure to settle is raised from the generator (as a failing flush
in the agent body was), and its events are never acked: Kafka delivers them
again, and the handlers are idempotent on re-delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faust.types import EventT, StreamT

log = logging.getLogger(__name__)


async def take_ready(stream: StreamT, max_size: int, linger_s: float,
                     settle: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[list[EventT]]:
    """Yield ``stream``'s events in batches of at most ``max_size`` (see the module docstring)."""
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    pending: list[EventT] = []
    arrived = asyncio.Event()  # pending is not empty
    full = asyncio.Event()  # pending holds max_size events
    room = asyncio.Event()  # pending may take another event
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        # Faust's stream runs this for each event, in order, from its passive drainer: blocking here
        # (a full buffer) holds the stream until a batch is taken.
        while not room.is_set():
            await stream.wait(room)
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_ready: the stream has no current event")
        pending.append(event)
        arrived.set()
        if len(pending) >= max_size:
            full.set()
            room.clear()
        return value

    settling: asyncio.Future | None = None
    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked here, once settled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))  # Faust's own take_events drives the stream so too
    try:
        while not stream.should_stop:
            if not pending:  # idle: wait for an event, then linger for more
                if await stream.wait_for_stopped(arrived):
                    break
                if linger_s > 0 and not full.is_set():
                    await stream.wait_for_stopped(full, timeout=linger_s)
                if not pending:
                    continue
            batch = pending[:]
            pending.clear()
            arrived.clear()
            full.clear()
            room.set()
            yield batch
            # The body returned: this batch's settle runs while the next batch is processed.
            if settling is not None:
                await settling  # raises the previous settle's failure
            settling = asyncio.ensure_future(_settle_then_ack(stream, batch, settle))
        if settling is not None:
            await settling
    finally:
        if settling is not None:
            if not settling.done():
                settling.cancel()  # stopping: its events are not acked, Kafka delivers them again
            elif not settling.cancelled() and (exc := settling.exception()) is not None:
                log.warning("the last batch's settle failed while the agent stopped: %r", exc)
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)


async def _settle_then_ack(stream: StreamT, events: list[EventT], settle: Callable[[], Awaitable[None]] | None) -> None:
    if settle is not None:
        await settle()
    for event in events:
        await stream.ack(event)
