"""Reading a user's current state from outside the worker, through Kafka's compacted topics.

The worker's state lives in its RocksDB stores, but every change is also in two
compacted topics: the ``user-state`` table changelog and ``recommendations``.
The latest record for a key in each is the user's current state and list, so
``avrec recommend USER`` reads them without touching the worker.
"""

from __future__ import annotations

import time

import orjson
from kafka import KafkaConsumer, TopicPartition

from streams.ranking import UserState
from streams.records import Recommendation, decode_recommendation
from streams.settings import Settings


def _latest_for_key(settings: Settings, topic: str, key: bytes, timeout_s: float = 10.0) -> bytes | None:
    """The newest value for ``key`` in ``topic`` (None if absent or tombstoned)."""
    consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return None
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: bytes | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    if r.key == key:
                        latest = r.value
        return latest
    finally:
        consumer.close()


def current_state(settings: Settings, user_id: str) -> UserState | None:
    raw = _latest_for_key(settings, f"{settings.app_id}-user-state-changelog", orjson.dumps(user_id))
    return UserState.from_dict(orjson.loads(raw)) if raw else None


def current_list(settings: Settings, user_id: str) -> Recommendation | None:
    raw = _latest_for_key(settings, settings.kafka.topics.recommendations.name, user_id.encode())
    return decode_recommendation(raw) if raw else None
