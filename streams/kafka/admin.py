"""Topic creation and broker readiness through kafka-python's AdminClient (3.x API)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError as _KafkaPyError
from kafka.errors import TopicAlreadyExistsError

from streams.kafka.exceptions import TopicConfigError
from streams.settings import KafkaSettings, TopicSpec

log = logging.getLogger(__name__)


def admin_client(kafka: KafkaSettings, timeout_s: float = 5.0) -> KafkaAdminClient:
    cfg = kafka.kafka_python_config()
    cfg["request_timeout_ms"] = int(timeout_s * 1000)
    cfg["bootstrap_timeout_ms"] = int(timeout_s * 1000)
    cfg["client_id"] = f"{kafka.client_id}-admin"
    return KafkaAdminClient(**cfg)


def broker_ready(kafka: KafkaSettings, timeout_s: float = 3.0) -> bool:
    """One probe: True when a broker answers a metadata request and reports a controller."""
    try:
        client = admin_client(kafka, timeout_s)
    except (_KafkaPyError, OSError):
        return False
    try:
        cluster = client.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except (_KafkaPyError, OSError):
        return False
    finally:
        client.close()


def ensure_topics(
    kafka: KafkaSettings, specs: Iterable[TopicSpec], replication_factor: int = 1
) -> dict[str, str]:
    """Create missing topics; grow partitions and apply configs on existing ones.

    Returns ``{topic: "created" | "updated" | "unchanged"}``. Idempotent, and
    blocks until new topics have leaders, so a producer can use them at once.
    """
    specs = list(specs)
    result: dict[str, str] = {}
    client = admin_client(kafka, timeout_s=kafka.request_timeout_s)
    try:
        existing = set(client.list_topics())
        new = {
            s.name: {"num_partitions": s.partitions, "replication_factor": replication_factor, "configs": s.configs()}
            for s in specs
            if s.name not in existing
        }
        if new:
            try:
                client.create_topics(new, wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass  # raced with another creator
            except _KafkaPyError as exc:
                raise TopicConfigError(f"creating topics {sorted(new)} failed: {exc}") from exc
            result.update({name: "created" for name in new})
        have = [s for s in specs if s.name in existing]
        if have:
            counts = {t["name"]: len(t["partitions"]) for t in client.describe_topics([s.name for s in have])}
            grow = {s.name: s.partitions for s in have if counts.get(s.name, 0) < s.partitions}
            try:
                if grow:
                    client.create_partitions(grow)
                client.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, s.name, configs=s.configs()) for s in have]
                )
            except _KafkaPyError as exc:
                raise TopicConfigError(f"updating topics {[s.name for s in have]} failed: {exc}") from exc
            result.update({s.name: "updated" if s.name in grow else "unchanged" for s in have})
    finally:
        client.close()
    log.info("topics: %s", result)
    return result


def describe_topic_configs(kafka: KafkaSettings, name: str) -> dict[str, str]:
    """The topic's non-default configs, as ``{key: value}``."""
    client = admin_client(kafka, timeout_s=kafka.request_timeout_s)
    try:
        res = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        client.close()
    # kafka-python 3 answers {"topic": {name: {key: {"value": ..., ...}}}}.
    return {key: meta["value"] for key, meta in res.get("topic", {}).get(name, {}).items()}
