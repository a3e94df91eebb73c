"""A real avrec worker in a subprocess, on its own topics, group and collections.

Tests publish with kafka-python, consume what the worker publishes, and may
``kill -9`` and restart it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer

from streams.kafka.admin import ensure_topics
from streams.settings import Settings

READY_MARK = "[^Worker]: Ready"


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log_offset: int = field(default=0)

    @property
    def settings(self) -> Settings:
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, timeout: float = 120.0) -> None:
        s = self.settings
        ensure_topics(s.kafka, s.kafka.topics.all())
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "info"], env={**os.environ, **self.env},
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        logf.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if READY_MARK in self.new_log():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def new_log(self) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_bytes().decode(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def drop_collections(self) -> None:
        """Remove this worker's Milvus collections (its items and users)."""
        from streams.vectors.milvus import milvus_client

        m = self.settings.milvus
        client = milvus_client(m)
        try:
            for name in (m.items_collection, m.users_collection):
                if client.has_collection(name):
                    client.drop_collection(name)
        finally:
            client.close()

    # -- Kafka helpers ----------------------------------------------------------------
    def produce(self, kind: str, records: list, raw: bool = False) -> None:
        s = self.settings
        topic = getattr(s.kafka.topics, kind).name
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all", linger_ms=2)
        for rec in records:
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
