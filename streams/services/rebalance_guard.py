"""Hand each partition's events to the agents in offset order across rebalances.

After a rebalance, Faust resumes the flow of messages and only then seeks every
assigned partition back to its committed offset (``tables/recovery.py``,
``_resume_streams``). Records fetched before the seek are stamped with the new
generation and reach the agents too, ahead of the re-read from the committed
offset. With several workers a partition's records fetched by this worker
before it lost the partition could then be applied after records the next
owner applied, or before earlier records of the same partition: a user's events
out of order (3 workers, kill -9 and restart: found by
tests/reliability/test_worker_crash_replay.py). The same happens for events
``take_events`` buffered before a rebalance.

The rule here: in each generation, a partition's events are taken only after
Faust's seek for that generation, starting at the offset it sought, in order.
Anything else is dropped without an ack (it is read again from the committed
offset) and without counting against Faust's wait for in-flight events.

An event past the next expected offset means Faust's consumer skipped records
(seen right after rebalances: a record fetched before the seek moves Faust's own
read position past the re-read ones). The partition is then read again from the
first record at or after the expected offset (a probe asks the broker which one
that is, so a real gap, e.g. a transaction marker, is stepped over, not waited for).
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class RebalanceGuard:
    def __init__(self, app, kafka=None) -> None:
        self.app = app
        self.kafka = kafka  # KafkaSettings of the probe consumer (None: gaps are taken as they come)
        self._probe = None
        self._probe_lock: asyncio.Lock | None = None
        self.reread = 0
        self.pending: dict = {}  # TP -> (offset sought back to, when): ahead events are coming again
        self.sought_generation: int | None = None
        self.sought: dict = {}  # TP -> the offset the last seek put it at (None: no committed offset)
        self.expected: dict = {}  # TP -> the next offset to take in this generation
        self.dropped = 0

    def install(self) -> None:
        """Follow every seek to committed offsets of the app's consumer (before the worker starts)."""
        from faust.transport.drivers.aiokafka import Consumer

        guard = self
        original = Consumer.seek_to_committed

        async def seek_to_committed(consumer):
            offsets = await original(consumer)
            if consumer.app is guard.app:
                # aiokafka seeks only partitions with a committed offset > 0; after a rebalance it then
                # never fetched the others here (a new group's first uploads sat unread for good; Faust
                # issues #166, #629). Give them a position: the log's start (auto_offset_reset earliest).
                for tp, off in offsets.items():
                    if (not off or off < 0) and not consumer._is_changelog_tp(tp):  # tables place changelogs
                        await consumer.seek(tp, 0)
                guard.on_seek(offsets)
            return offsets

        Consumer.seek_to_committed = seek_to_committed

    def on_seek(self, offsets) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in offsets:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        log.info("generation %s: reading from the committed offsets of %s", self.app.consumer_generation_id,
                 "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by_topic.items())) or "no partitions")
        self.sought = {tp: (off if off is not None and off >= 0 else None) for tp, off in offsets.items()}
        self.expected = {}
        self.pending = {}
        self.sought_generation = self.app.consumer_generation_id

    async def in_order(self, events: list) -> list:
        """The events to process now, in the order given; the others dropped unacked."""
        generation = self.app.consumer_generation_id
        keep, drop = [], []
        reread: set = set()  # partitions sought back in this call: the rest of their events come again
        for ev in events:
            msg = ev.message
            if msg.generation_id is not None and msg.generation_id != generation:
                drop.append(ev)  # fetched before the latest rebalance
                continue
            if self.sought_generation != generation:
                drop.append(ev)  # this generation's seek has not happened yet: read again after it
                continue
            tp = msg.tp
            want = self.expected.get(tp, self.sought.get(tp))
            if want is None and self.kafka is not None:
                # No committed offset (a new group): the consumer starts at the log's first record.
                want = self.expected[tp] = await self._first_offset(tp, 0)
            if tp in reread or (want is not None and msg.offset < want):
                drop.append(ev)  # taken already in this generation, or coming again
                continue
            if want is not None and msg.offset > want and self.kafka is not None:
                sought_back = self.pending.get(tp)
                if sought_back is not None and time.monotonic() - sought_back[1] < 10.0:
                    drop.append(ev)  # fetched before our seek back: it comes again after the records skipped
                    continue
                first = await self._first_offset(tp, want)
                if first < msg.offset:
                    log.warning("%s[%d]: records %d..%d were skipped by the consumer; reading them again",
                                tp.topic, tp.partition, want, msg.offset - 1)
                    await self.app.consumer.seek(tp, first)
                    self.expected[tp] = first
                    self.pending[tp] = (first, time.monotonic())
                    self.reread += 1
                    reread.add(tp)
                    drop.append(ev)
                    continue
                log.info("%s[%d]: no record between offsets %d and %d (a gap in the log)", tp.topic, tp.partition,
                         want, msg.offset)
            self.expected[tp] = msg.offset + 1
            self.pending.pop(tp, None)
            keep.append(ev)
        if drop:
            self._forget(drop)
        return keep

    async def _first_offset(self, tp, offset: int) -> int:
        """The offset of the first record at or after ``offset`` in ``tp`` (``offset`` if there is none yet)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:  # one consumer, one assignment at a time: the agents share it
            if self._probe is None:
                self._probe = AIOKafkaConsumer(**self.kafka.aiokafka_config(), group_id=None,
                                               enable_auto_commit=False, fetch_max_wait_ms=100)
                await self._probe.start()
            ktp = TopicPartition(tp.topic, tp.partition)
            self._probe.assign([ktp])
            self._probe.seek(ktp, offset)
            got = await self._probe.getmany(ktp, timeout_ms=2000, max_records=1)
            records = got.get(ktp) or []
            return records[0].offset if records else offset

    def _forget(self, events: list) -> None:
        consumer = self.app.consumer
        for ev in events:
            # Marked acked so Faust's ack bookkeeping skips it (an ack would let the committed offset move past
            # the record before its re-read is processed), and out of the set a rebalance waits to empty.
            ev.message.acked = True
            consumer._unacked_messages.discard(ev.message)
        self.dropped += len(events)
        log.info("dropped %d event(s) out of order (read before this generation's seek to committed offsets, or "
                 "ahead of records read again); they are read again in order (%d so far)", len(events), self.dropped)
