"""The Faust agents: thin loops that batch events and hand them to streams/services.

Each agent reads with ``take_events`` so a batch shares Triton and Milvus round
trips. Faust acks a batch's events only after the loop body returns, so an
offset never moves past an event that was not processed or dead-lettered, nor
past one whose table writes are not yet in Kafka (``changelog_flushed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from streams import topics
from streams.app import app
from streams.items.owner import ItemOwner
from streams.services.changelog import changelog_flushed
from streams.services.context import get_context
from streams.services.control import ControlProcessor
from streams.services.deadletters import send_dead_letter
from streams.services.interactions import InteractionProcessor
from streams.services.rebalance_guard import RebalanceGuard
from streams.services.recommender import Recommender
from streams.services.uploads import UploadProcessor
from streams.settings import get_settings
from streams.web.metrics import EVENTS_IN, children

log = logging.getLogger(__name__)
_w = get_settings().worker
_events_in = children(EVENTS_IN)


# Events reach the handlers in offset order per partition, across rebalances (see rebalance_guard.py).
guard = RebalanceGuard(app, get_settings().kafka)
guard.install()


async def guarded(handler, events: list) -> None:
    """Never let a bug lose a batch: Faust acks a batch even when the loop body raises.

    Transient outages are retried inside the handlers; anything else that escapes
    is a bug, so the batch's events go to their dead-letter topics (stage
    "internal") where they can be re-driven, and the agent keeps going.
    """
    events = await guard.in_order(events)
    if not events:
        return
    # Counted here, after the guard: a record it drops is read again, and counted then, once.
    for topic, n in Counter(ev.message.topic for ev in events).items():
        _events_in(topic).inc(n)
    try:
        await handler.handle(events)
    except Exception as exc:  # noqa: BLE001 - the safety net itself
        log.exception("%s failed on a batch of %d events; dead-lettering them", type(handler).__name__, len(events))
        for ev in events:
            await send_dead_letter(ev, "internal", f"{type(exc).__name__}: {exc}")
    # The batch is acked when this returns: its table writes must reach Kafka first (see changelog.py).
    await changelog_flushed()


@app.agent(topics.uploads, name="uploads")
async def process_uploads(stream):
    uploads = UploadProcessor(await get_context())
    async for events in stream.take_events(_w.upload_batch, within=_w.upload_batch_within_s):
        await guarded(uploads, events)


@app.agent(topics.user_stream, name="interactions")
async def process_interactions(stream):
    """A user's events and commands (refresh, forget-me, released parked events), one batch at a time."""
    ctx = await get_context()
    interactions = InteractionProcessor(ctx, Recommender(ctx))
    try:
        async for events in stream.take_events(_w.interaction_batch, within=_w.interaction_batch_within_s):
            await guarded(interactions, events)
    finally:
        # A clean stop writes the user vectors still queued for Milvus (kill -9: see user_mirror.py).
        try:
            await asyncio.wait_for(ctx.mirror.drain(), timeout=_w.retry_max_s * 2)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            log.warning("stopped before the last user vectors reached Milvus; they heal on each user's next event")
        if ctx.ops_producer is not None:  # every record on it was awaited: nothing is left to deliver
            await ctx.ops_producer.stop()


@app.agent(topics.item_commands, name="item-owner")
async def process_item_commands(stream):
    """The owner of each item partition: parked interactions, takedowns in Milvus, snapshots."""
    owner = ItemOwner(await get_context())
    async for events in stream.take_events(64, within=0.01):
        await guarded(owner, events)


@app.agent(topics.control, name="control")
async def process_control(stream):
    control = ControlProcessor(await get_context())
    async for events in stream.take_events(16, within=0.05):
        await guarded(control, events)
