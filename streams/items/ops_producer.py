"""The user agent's own producer for item ops and parked interactions.

Why not Faust's producer: aiokafka keeps one produce request in flight per
broker connection (its sender skips a node while a request to it is
outstanding). On Faust's producer a batch's item ops would then queue behind
the lists, changelog records and mirror traffic already in flight, and the
lists of the batch wait for those ops' acks (an event's item ops are in Kafka
before its user's state is written, ``streams/items/store.py``). A connection
of their own takes that queue off the critical path of every batch.

Ordering is unchanged where it matters: the user agent awaits a batch's acks
before it handles the next batch, so its records stay in order on each
partition. Records of the other writers of ``item-deltas`` (uploads, control,
the owners' snapshot markers) come from other agents and were never ordered
against the user agent's.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from streams.settings import Settings

log = logging.getLogger(__name__)


class ItemOpsProducer:
    """A started-on-demand aiokafka producer, ``acks=all`` like Faust's, sending immediately (no linger):
    the user agent awaits these records before anything else of its batch can go on."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    k = self._settings.kafka
                    cfg = k.aiokafka_config()
                    cfg["client_id"] = f"{k.client_id}-item-ops"
                    cfg["request_timeout_ms"] = int(self._settings.worker.item_ops_request_timeout_s * 1000)
                    producer = AIOKafkaProducer(**cfg, acks="all", linger_ms=0, max_request_size=1_000_000)
                    await producer.start()
                    self._producer = producer
                    log.info("item-ops producer started")
        return self._producer

    async def send(self, topic: str, value: bytes, partition: int, key: bytes | None = None) -> asyncio.Future:
        """Queue a record; returns its delivery future (awaited for the broker's ack)."""
        producer = await self._started()
        return await producer.send(topic, value=value, key=key, partition=partition)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
