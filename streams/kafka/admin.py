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


def check_partition_counts(kafka: KafkaSettings, specs: Iterable[TopicSpec]) -> None:
    """Refuse to run on keyed topics whose partition count is not the configured one.

    A key's partition is its hash modulo the count (streams/items/partitioning.py),
    and the state of a key lives in that partition's table; another count moves
    keys away from their state. Counts are chosen up front (docs/EVENTS.md).
    """
    specs = list(specs)
    client = admin_client(kafka, timeout_s=kafka.request_timeout_s)
    try:
        counts = {t["name"]: len(t["partitions"]) for t in client.describe_topics([s.name for s in specs])}
    finally:
        client.close()
    missing = [s for s in specs if not counts.get(s.name)]  # described with 0 partitions (or not at all)
    if missing:
        raise TopicConfigError(
            "keyed topics are missing: " + ", ".join(f"{s.name} ({s.partitions} partitions)" for s in missing)
            + ". Create them with those counts (`avrec stack up` creates the local stack's topics), or point "
            "AVREC_KAFKA__TOPICS__<TOPIC>__NAME at the deployment's topics.")
    wrong = [f"{s.name}: {counts.get(s.name)} partitions, configured {s.partitions}" for s in specs
             if counts.get(s.name) != s.partitions]
    if wrong:
        raise TopicConfigError(
            "keyed topics must have the partition count the worker is configured with (" + "; ".join(wrong) + "). "
            "The count is fixed when a deployment starts: set AVREC_KAFKA__TOPICS__<TOPIC>__PARTITIONS / "
            "AVREC_KAFKA__ITEM_PARTITIONS to the topics' counts, or start a new app id with new topics and "
            "replay the log into it (docs/EVENTS.md, \"Partitions\").")


def check_copartitioned(kafka: KafkaSettings) -> None:
    """Refuse settings under which a user's interactions and impressions would have different owners.

    The user agent reads both topics as one stream, and a user's state lives in the
    partition their key hashes to: the same key must hash to the same partition
    number in both, so both need the same count (checked against the broker by
    :func:`check_partition_counts`).
    """
    t = kafka.topics
    if t.impressions.partitions != t.interactions.partitions:
        raise TopicConfigError(
            f"{t.impressions.name} has {t.impressions.partitions} partitions configured and {t.interactions.name} "
            f"{t.interactions.partitions}; impressions must be co-partitioned with interactions (same count, keyed "
            f"by user_id). Set AVREC_KAFKA__TOPICS__IMPRESSIONS__PARTITIONS={t.interactions.partitions} "
            "(docs/EVENTS.md, \"Partitions\").")


def wait_group_stable(kafka: KafkaSettings, group_id: str, members: int, timeout_s: float) -> float:
    """Wait until the consumer group ``group_id`` is ``Stable`` with ``members`` members; seconds waited.

    Several workers started one after the other rebalance the group once per join; a
    caller that must not race a rebalance (a lock-step replay) waits for this first.
    """
    import time

    t0 = time.monotonic()
    client = admin_client(kafka, timeout_s=kafka.request_timeout_s)
    try:
        while True:
            desc = client.describe_groups([group_id]).get(group_id) or {}
            state, n = desc.get("group_state"), len(desc.get("members") or [])
            if state == "Stable" and n == members:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"consumer group {group_id} is {state} with {n} members after {timeout_s:.0f} s; "
                                   f"expected Stable with {members}")
            time.sleep(0.5)
    finally:
        client.close()
