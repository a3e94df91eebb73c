"""`avrec produce`, `avrec tail recommendations` and `avrec replay movielens` against the real Kafka."""

from __future__ import annotations

import time

import orjson
import pytest
import typer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from typer.testing import CliRunner

from streams.events_cli import register
from streams.kafka.admin import ensure_topics
from streams.records import Recommendation, decode_interaction, decode_upload, encode
from streams.settings import TopicSpec

pytestmark = pytest.mark.stack

NOW = time.time()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, like the real `avrec` app
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def consume_all(settings, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: list = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=300).values():
                got.extend(recs)
        # A short extra poll: nothing beyond the expected records arrives.
        for recs in consumer.poll(timeout_ms=500).values():
            got.extend(recs)
        return got
    finally:
        consumer.close()


def test_produce_sends_valid_lines_and_reports_bad_ones(stack, settings, unique, tmp_path, cli):
    topic = f"interactions-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=topic, partitions=3)])
    good = [
        {"event_id": f"e{i}", "user_id": f"user-{i % 2}", "item_id": f"item-{i}", "type": "view", "ts": NOW - 10 + i}
        for i in range(3)
    ]
    lines = [
        orjson.dumps(good[0]),
        b'{"event_id": "bad-1", "user_id": "u", "item_id": "i", "type": "love", "ts": 1}',  # line 2: bad type
        orjson.dumps(good[1]),
        b"",  # blank: skipped silently
        b"this is not json",  # line 5
        orjson.dumps(good[2]),
    ]
    f = tmp_path / "interactions.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")

    result = invoke(cli, "produce", "interactions", str(f), "--topic", topic)
    assert result.exit_code == 0, result.output
    assert "sent 3, rejected 2, failed 0" in result.stdout
    assert f"{f}:2: rejected (validate): Interaction: type:" in result.stderr
    assert f"{f}:5: rejected (decode)" in result.stderr

    got = consume_all(settings, topic, 3)
    assert len(got) == 3
    recs = {decode_interaction(m.value).event_id: m for m in got}
    assert set(recs) == {"e0", "e1", "e2"}
    for m in got:
        assert m.key == decode_interaction(m.value).user_id.encode()


def test_produce_uploads(stack, settings, unique, tmp_path, cli):
    topic = f"uploads-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=topic, partitions=1)])
    up = {"event_id": "u1", "item_id": f"item-{unique}", "creator_id": "c", "title": "T", "created_at": NOW}
    f = tmp_path / "uploads.jsonl"
    f.write_bytes(orjson.dumps(up) + b"\n")
    result = invoke(cli, "produce", "uploads", str(f), "--topic", topic)
    assert result.exit_code == 0 and "sent 1, rejected 0" in result.stdout
    (msg,) = consume_all(settings, topic, 1)
    assert msg.key == up["item_id"].encode() and decode_upload(msg.value).title == "T"


def test_tail_prints_the_users_recommendations(stack, settings, unique, cli):
    topic = f"recs-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=topic, partitions=2, compact=True)])
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    producer = KafkaProducer(**settings.kafka.kafka_python_config(), acks="all")
    for user, item in ((bob, "item-b"), (alice, "item-a"), (bob, "item-c")):
        rec = Recommendation.model_validate(
            {
                "user_id": user,
                "items": [
                    {"item_id": item, "score": 0.875, "reasons": ["similar to item-x", "fresh"]},
                    {"item_id": "item-z", "score": 0.5, "reasons": []},
                ],
                "model_version": "hybrid-v1",
                "source_event_id": f"ev-{user}",
                "event_ts": NOW,
                "produced_at": NOW,
            }
        )
        producer.send(topic, key=rec.kafka_key(), value=encode(rec))
    producer.send(topic, key=b"not-json-user", value=b"\xff garbage")
    producer.flush(timeout=30)
    producer.close()

    result = invoke(
        cli, "tail", "recommendations", "--topic", topic, "--user", alice, "--from-beginning", "--max", "1",
        "--timeout", "30",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"{alice}:")
    assert "item-a (0.875, similar to item-x)" in lines[0] and "item-z (0.500)" in lines[0]
    assert bob not in result.output

    # All users; an undecodable record is reported, not fatal; --timeout ends the tail (it returns at all:
    # without the timeout the tail follows the topic for ever, and pytest's own timeout fails the test).
    result = invoke(cli, "tail", "recommendations", "--topic", topic, "--from-beginning", "--timeout", "3")
    assert result.exit_code == 0, result.output
    assert sum(1 for ln in result.stdout.splitlines() if ln.startswith(bob)) == 2
    assert "not-json-user: undecodable" in result.stderr


def test_replay_publishes_a_dataset_in_time_order(stack, settings, unique, tmp_path, cli):
    up_topic, int_topic = f"up-{unique}", f"int-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=up_topic, partitions=1), TopicSpec(name=int_topic, partitions=1)])
    d = tmp_path / "ml"
    d.mkdir()
    flags = "|".join(["0"] * 19)
    (d / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n2|Heat (1995)|01-Jan-1995||http://x|{flags}\n",
        encoding="latin-1",
    )
    # Gaps of 100 s at --speed 50 would be 2 s each; --max-gap 0.3 caps them.
    (d / "u.data").write_text("1\t1\t5\t1000\n1\t2\t3\t1100\n2\t1\t1\t1200\n2\t2\t4\t1300\n", encoding="latin-1")

    result = invoke(
        cli, "replay", "movielens", str(d), "--speed", "50", "--max-gap", "0.3",
        "--uploads-topic", up_topic, "--interactions-topic", int_topic,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 uploads" in result.stdout and "4 interactions" in result.stdout and "failed 0" in result.stdout
    # 6 events, gaps 1, 99, 1, 100, 100 s -> slept 0.02 + 0.3 + 0.02 + 0.3 + 0.3 (uncapped: 4 s more).
    # The schedule is checked, not the wall clock (a busy machine only sleeps longer).
    assert "paced 0.94 s of gaps" in result.stdout
    ups = consume_all(settings, up_topic, 2)
    ints = consume_all(settings, int_topic, 4)
    assert sorted(m.key for m in ups) == [b"ml:1", b"ml:2"]
    assert [decode_interaction(m.value).ts for m in sorted(ints, key=lambda m: m.offset)] == [1000, 1100, 1200, 1300]
    assert [decode_interaction(m.value).type for m in sorted(ints, key=lambda m: m.offset)] == [
        "like", "view", "dislike", "like"
    ]  # fmt: skip

    # --limit and --speed 0.
    up2, int2 = f"up2-{unique}", f"int2-{unique}"
    ensure_topics(settings.kafka, [TopicSpec(name=up2, partitions=1), TopicSpec(name=int2, partitions=1)])
    result = invoke(
        cli, "replay", "movielens", str(d), "--limit", "3", "--uploads-topic", up2, "--interactions-topic", int2
    )
    assert result.exit_code == 0 and "acked 3" in result.stdout, result.output
