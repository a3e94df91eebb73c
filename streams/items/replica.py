"""Every worker's copy of the item state: an :class:`ItemStore` fed from Kafka.

Start-up (``start``): read the compacted ``item-state`` topic to its end (the
owners' snapshots), then every ``item-deltas`` partition from the record after
its snapshot to the end the log had when the worker started; only then do the
agents rank anything. Afterwards a background task keeps applying the log as it
grows. It uses its own aiokafka consumer with no consumer group: every worker
reads every partition.

``caught_up()`` is the consistency barrier of the lists: it asks the broker
where each partition ends now and waits until the store has applied everything
before that. A worker sends a batch's item ops (and waits for the broker's
acks) before it ranks the batch's lists, so after the barrier a list sees its
own batch and everything any worker had sent before it: in lock-step, exactly
what the offline replay sees.

A worker does not wait to read its own records back (``apply_own``): once the
broker acked one at offset o, the store applies it at once if it has applied
everything before o, exactly as the reader would have, and the reader skips it
when it comes. Records of other workers in between are still read and applied
first, in log order: a record is only ever applied at the store's position.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.items.exceptions import ItemLogTruncated
from streams.items.store import ItemStore
from streams.settings import Settings

log = logging.getLogger(__name__)


class ItemReplica:
    def __init__(self, settings: Settings, store: ItemStore) -> None:
        self.settings = settings
        self.store = store
        app = settings.app_id
        self.log_topic = f"{app}-item-deltas"
        self.state_topic = f"{app}-item-state"
        self.partitions = settings.kafka.item_partitions
        self.log_tps = [TopicPartition(self.log_topic, p) for p in range(self.partitions)]
        self._consumer: AIOKafkaConsumer | None = None
        # Asks where partitions end, on a connection of its own: a broker answers one connection's
        # requests in order, so on the reading consumer's the question would wait behind its fetch
        # parked at the broker for up to replica_fetch_wait_ms (every batch's barrier paid that).
        self._offsets: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._advanced = asyncio.Event()
        self.records = 0
        self.own_applied = 0  # own records applied on their ack (apply_own), not read back
        self.bootstrap_s = 0.0

    def _new_consumer(self) -> AIOKafkaConsumer:
        w = self.settings.worker
        return AIOKafkaConsumer(**self.settings.kafka.aiokafka_config(), group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=w.replica_fetch_wait_ms, max_partition_fetch_bytes=8 << 20,
                                auto_offset_reset="earliest")

    async def start(self) -> None:
        """Bootstrap from the snapshots and the log (see the module doc), then follow the log."""
        t0 = time.perf_counter()
        consumer = self._consumer = self._new_consumer()
        await consumer.start()
        self._offsets = self._new_consumer()
        await self._offsets.start()
        snapshots = await self._read_snapshots(consumer)
        self.store.finish_load()
        starts = await consumer.beginning_offsets(self.log_tps)
        for tp in self.log_tps:
            want = self.store.position[tp.partition]
            if want < starts[tp]:
                raise ItemLogTruncated(
                    f"{tp.topic}[{tp.partition}] starts at offset {starts[tp]}, but its newest snapshot ends at "
                    f"{want - 1}: records in between were deleted by retention before a snapshot held them. "
                    f"Raise the topic's retention.ms above AVREC_WORKER__ITEM_SNAPSHOT_EVERY_S, then rebuild "
                    f"the item state by replaying the interactions into a new app id.")
        consumer.assign(self.log_tps)
        for tp in self.log_tps:
            consumer.seek(tp, self.store.position[tp.partition])
        await self.caught_up(timeout=None, reading=True)
        self.bootstrap_s = time.perf_counter() - t0
        log.info("item state replica ready in %.1f s: %d snapshot records, %d log records; %s", self.bootstrap_s,
                 snapshots, self.records, self.store.summary())
        self._task = asyncio.create_task(self._follow(), name="item-state-replica")

    async def _read_snapshots(self, consumer: AIOKafkaConsumer) -> int:
        tps = [TopicPartition(self.state_topic, p) for p in range(self.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        n = 0
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            batches = await consumer.getmany(*tps, timeout_ms=500, max_records=20_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < end[tp]:
                        self.store.load_record(tp.partition, r.key, r.value)
                        n += 1
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        return n

    async def _read_some(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5_000)
        store = self.store
        for tp, records in batches.items():
            p = tp.partition
            for r in records:
                if r.offset >= store.position[p]:  # below: applied already (apply_own)
                    store.apply(p, r.offset, r.value)
            self.records += len(records)
        if batches:
            self._signal_advanced()

    def apply_own(self, partition: int, offset: int, raw: bytes) -> bool:
        """Apply this worker's record ``raw``, acked at ``offset`` of log ``partition``, without reading it
        back, when it is the next record to apply; else (other records before it are not applied yet) the
        reader applies it in its turn. True when applied here."""
        if self.store.position[partition] != offset:
            return False
        self.store.apply(partition, offset, raw)
        self.own_applied += 1
        self._signal_advanced()
        return True

    def _signal_advanced(self) -> None:
        """Wake every :meth:`caught_up` waiting now; later waiters wait for the next advance."""
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def _follow(self) -> None:
        while True:
            try:
                await self._read_some(500)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a background task has no caller to raise to
                # A record this code cannot apply is a bug or a foreign writer: the state would
                # silently diverge if it were skipped, so say it loudly and keep retrying.
                log.exception("item state replica could not apply the log; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def end_offsets(self) -> dict[int, int]:
        """Where each item-deltas partition ends now (one request to the broker)."""
        assert self._offsets is not None
        end = await self._offsets.end_offsets(self.log_tps)
        return {tp.partition: off for tp, off in end.items()}

    def behind(self, targets: dict[int, int]) -> int:
        pos = self.store.position
        return sum(max(0, t - pos[p]) for p, t in targets.items())

    async def caught_up(self, timeout: float | None, targets: dict[int, int] | None = None,
                        reading: bool = False) -> bool:
        """Wait until the store has applied every record before ``targets`` (default: the log's end now).

        False after ``timeout`` seconds (None: no limit). ``reading``: this call reads the log itself
        (start-up, before the background task exists).
        """
        targets = await self.end_offsets() if targets is None else targets
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.behind(targets):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if reading:
                await self._read_some(200)
                continue
            try:
                await asyncio.wait_for(self._advanced.wait(), timeout=left)
            except asyncio.TimeoutError:
                return False
        return True

    async def user_topic_end(self, topic: str, partition: int) -> int:
        """Where a partition of another topic ends now (forget-me marks the user's events before it)."""
        assert self._offsets is not None
        tp = TopicPartition(topic, partition)
        return (await self._offsets.end_offsets([tp]))[tp]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        for consumer in (self._consumer, self._offsets):
            if consumer is not None:
                await consumer.stop()
