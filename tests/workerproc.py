"""A real avrec worker in a subprocess, on its own topics, group and collections.

Tests publish with kafka-python, consume what the worker publishes, and may
``kill -9`` and restart it.
"""

from __future__ import annotations

import time

import orjson
from kafka import KafkaConsumer, KafkaProducer

from streams.worker_process import READY_MARK  # noqa: F401  (re-exported for tests)
from streams.worker_process import WorkerProcess as _WorkerProcess


class WorkerProcess(_WorkerProcess):
    """The library's worker subprocess plus the Kafka helpers tests use."""

    # -- Kafka helpers ----------------------------------------------------------------
    def produce(self, kind: str, records: list, raw: bool = False, rate: float = 0.0) -> None:
        """Send ``records`` (dicts keyed by their user/item id, or ``(key, value)`` with ``raw``), at most
        ``rate`` per second (0: as fast as the broker takes them)."""
        s = self.settings
        topic = getattr(s.kafka.topics, kind).name
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all", linger_ms=2)
        t0 = time.monotonic()
        for n, rec in enumerate(records):
            if rate > 0 and (ahead := t0 + n / rate - time.monotonic()) > 0:
                time.sleep(ahead)
            if raw:
                key, value = rec
            else:
                key = (rec.get("user_id") or rec.get("item_id") or "").encode()
                value = orjson.dumps(rec)
            producer.send(topic, key=key, value=value)
        producer.flush(30)
        producer.close()

    def consumer(self, kind: str) -> KafkaConsumer:
        s = self.settings
        return KafkaConsumer(getattr(s.kafka.topics, kind).name, **s.kafka.kafka_python_config(),
                             auto_offset_reset="earliest", enable_auto_commit=False)


def poll_until(consumer: KafkaConsumer, predicate, timeout: float, worker: WorkerProcess | None = None) -> list:
    """Collect records until ``predicate(all_records_so_far)`` is true; returns them."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=300).values():
            got.extend(recs)
        if predicate(got):
            return got
        if worker is not None and not worker.alive():
            raise RuntimeError(f"worker died:\n{worker.tail()}")
    raise TimeoutError(f"condition not met in {timeout}s; {len(got)} records seen"
                       + (f"\nworker log:\n{worker.tail()}" if worker else ""))


def worker_env(unique: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "AVREC_APP_ID": f"avrec-{unique}",
        "AVREC_KAFKA__TOPIC_PREFIX": f"{unique}-",
        "AVREC_MILVUS__ITEMS_COLLECTION": f"items_{unique}",
        "AVREC_MILVUS__USERS_COLLECTION": f"users_{unique}",
        **(extra or {}),
    }
