"""Real Kafka (KRaft) from the local stack: topics with configs, and a consumer-group round trip."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.kafka.admin import admin_client, describe_topic_configs, ensure_topics
from streams.settings import TopicSpec

pytestmark = pytest.mark.stack


def test_stack_created_the_configured_topics(stack, settings):
    client = admin_client(settings.kafka)
    try:
        topics = {t["name"]: t for t in client.describe_topics([s.name for s in settings.kafka.topics.all()])}
    finally:
        client.close()
    for spec in settings.kafka.topics.all():
        assert spec.name in topics, f"{spec.name} missing"
        assert len(topics[spec.name]["partitions"]) == spec.partitions
    rec = describe_topic_configs(settings.kafka, settings.kafka.topics.recommendations.name)
    assert rec["cleanup.policy"] == "compact,delete"


def test_ensure_topics_creates_configures_and_grows(stack, settings, unique):
    spec = TopicSpec(name=f"t-{unique}", partitions=2, retention_ms=3_600_000)
    assert ensure_topics(settings.kafka, [spec]) == {spec.name: "created"}
    assert describe_topic_configs(settings.kafka, spec.name)["retention.ms"] == "3600000"
    # Idempotent, and a second call with more partitions and a new retention updates in place.
    assert ensure_topics(settings.kafka, [spec]) == {spec.name: "unchanged"}
    grown = spec.model_copy(update={"partitions": 3, "retention_ms": 7_200_000})
    assert ensure_topics(settings.kafka, [grown]) == {spec.name: "updated"}
    assert describe_topic_configs(settings.kafka, spec.name)["retention.ms"] == "7200000"
    client = admin_client(settings.kafka)
    try:
        (desc,) = client.describe_topics([spec.name])
    finally:
        client.close()
    assert len(desc["partitions"]) == 3


def test_produce_consume_round_trip_through_a_consumer_group(stack, settings, unique):
    topic, group = f"rt-{unique}", f"g-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=topic, partitions=3)])
    producer = KafkaProducer(**settings.kafka.kafka_python_config(), acks="all", value_serializer=orjson.dumps)
    sent = [{"user_id": f"u{i % 5}", "n": i} for i in range(60)]
    for rec in sent:
        producer.send(topic, key=rec["user_id"].encode(), value=rec)
    producer.flush(timeout=30)
    producer.close()

    def consume(expected: int) -> list[dict]:
        consumer = KafkaConsumer(
            topic, **settings.kafka.kafka_python_config(), group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False, value_deserializer=orjson.loads,
        )
        got: list = []
        deadline = time.monotonic() + 60
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
        consumer.commit()
        consumer.close()
        return got

    got = consume(len(sent))
    assert sorted(r.value["n"] for r in got) == list(range(60))
    # Same key -> same partition -> per-user order is preserved.
    for user in {r["user_id"] for r in sent}:
        ns = [r.value["n"] for r in sorted(got, key=lambda r: (r.partition, r.offset)) if r.key == user.encode()]
        assert ns == sorted(ns)
        assert len({r.partition for r in got if r.key == user.encode()}) == 1
    # The group committed its offsets: a new member of the same group sees nothing old.
    probe = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    committed = sum(probe.committed(TopicPartition(topic, p)) or 0 for p in range(3))
    probe.close()
    assert committed == len(sent)


async def test_item_ops_producer_delivers_in_order_and_restarts_after_stop(stack, settings, unique):
    """The user agent's own producer (streams/items/ops_producer.py): each send's future resolves once
    the broker has the record, at consecutive offsets in send order; after stop() it starts again."""
    from streams.items.ops_producer import ItemOpsProducer

    spec = TopicSpec(name=f"ops-{unique}", partitions=2)
    ensure_topics(settings.kafka, [spec])
    producer = ItemOpsProducer(settings)
    try:
        sent = [await producer.send(spec.name, f"op-{n}".encode(), partition=1) for n in range(5)]
        parked = await producer.send(spec.name, b"park", partition=0, key=b"item-7")
        acks = [await f for f in sent]
        assert [(m.partition, m.offset) for m in acks] == [(1, n) for n in range(5)]
        assert (await parked).partition == 0
        await producer.stop()
        again = await (await producer.send(spec.name, b"op-5", partition=1))  # started on demand
        assert again.offset == 5
    finally:
        await producer.stop()
    consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        consumer.assign([TopicPartition(spec.name, 0), TopicPartition(spec.name, 1)])
        got: dict[int, list] = {0: [], 1: []}
        deadline = time.monotonic() + 20
        while len(got[1]) < 6 or not got[0]:
            assert time.monotonic() < deadline, got
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    assert got[1] == [(None, f"op-{n}".encode()) for n in range(6)]
    assert got[0] == [(b"item-7", b"park")]


async def test_replica_applies_its_own_acked_records_without_reading_them_back(stack, settings, unique):
    """ItemReplica.apply_own (streams/items/replica.py): a record this worker sent is applied on its ack when
    it is the next one in its partition; the reader then skips it (applied once). A record further ahead
    is left to the reader, in log order."""
    from streams.items import wire
    from streams.items.ops_producer import ItemOpsProducer
    from streams.items.replica import ItemReplica
    from streams.items.store import ItemStore
    from streams.ranking import UserState, new_cooccurrence
    from streams.ranking.ingest import ingest_user

    s = settings.model_copy(update={"app_id": f"replica-{unique}"})
    ensure_topics(s.kafka, s.internal_topics())
    cfg = s.ranking
    cooc, user = new_cooccurrence(cfg), UserState()

    def record(n: int, item: str) -> bytes:  # a user's n-th event as the user agent ships its item ops
        ops = ingest_user(user, f"e{n}", item, None, "like", None, 1.7e9 + n, cfg, cooc)
        assert ops
        return wire.encode_ops([wire.SourcedOp("i0", n, op) for op in ops if op.item == "a"])

    log_topic = f"{s.app_id}-item-deltas"
    producer = ItemOpsProducer(s)
    store = ItemStore(cfg, s.kafka.item_partitions)
    replica = ItemReplica(s, store)
    try:
        first = record(0, "a")  # another worker's, in the log before this one starts
        await (await producer.send(log_topic, first, partition=0))
        await replica.start()
        assert store.position[0] == 1 and replica.own_applied == 0
        ours = record(1, "b")  # co-occurs with "a": changes a's row
        md = await (await producer.send(log_topic, ours, partition=0))
        assert md.offset == 1
        assert replica.apply_own(0, 1, ours)  # the next record: applied on the ack
        assert store.position[0] == 2 and "b" in store.cooc.counts["a"]
        row = dict(store.cooc.counts["a"])
        assert not replica.apply_own(0, 1, ours)  # applied already: not again
        assert not replica.apply_own(0, 5, ours)  # records 2..4 not applied yet: the reader's turn
        assert store.position[0] == 2
        assert await replica.caught_up(timeout=20, targets={0: 2})
        deadline = time.monotonic() + 20
        while replica.records < 2:  # the reader fetches the record too, and skips it
            assert time.monotonic() < deadline, "the replica never read its own record back"
            await asyncio.sleep(0.05)
        assert store.ops_skipped == 0  # skipped by offset, before its ops were even looked at
        assert dict(store.cooc.counts["a"]) == row and store.position[0] == 2
        assert replica.own_applied == 1
    finally:
        await replica.stop()
        await producer.stop()
