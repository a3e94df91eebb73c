"""kill -9 the worker mid-stream: state comes back from the changelog, re-delivered events apply once."""

from __future__ import annotations

import time
import uuid

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.ranking import UserState, apply_interaction
from streams.records import decode_recommendation
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack
NOW = time.time()


def changelog_states(settings, users: set[str]) -> dict[str, UserState]:
    consumer = KafkaConsumer(f"{settings.app_id}-user-state-changelog", **settings.kafka.kafka_python_config(),
                             auto_offset_reset="earliest", enable_auto_commit=False)
    latest: dict[str, dict] = {}
    deadline = time.monotonic() + 20
    idle = 0
    while time.monotonic() < deadline and idle < 4:
        batch = consumer.poll(timeout_ms=500)
        idle = 0 if batch else idle + 1
        for recs in batch.values():
            for r in recs:
                key = orjson.loads(r.key)
                if key in users:
                    latest[key] = orjson.loads(r.value)
    consumer.close()
    return {u: UserState.from_dict(v) for u, v in latest.items()}


def committed(settings, group: str, topic: str, partitions: int) -> int:
    """Offsets the worker's consumer group has committed on ``topic``, summed over partitions."""
    probe = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        return sum(probe.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    finally:
        probe.close()


def test_kill9_recovers_state_and_never_double_applies(stack, tmp_path):
    unique = "crash" + uuid.uuid4().hex[:8]
    # Commit rarely, so the kill lands before any offset is committed and every event is re-delivered.
    w = WorkerProcess(worker_env(unique, {"AVREC_WORKER__COMMIT_INTERVAL_S": "60"}), tmp_path / "worker.log")
    w.start()
    s = w.settings
    try:
        items = [{"event_id": f"u{i}", "item_id": f"c{i}", "creator_id": f"cr{i}", "title": t, "tags": [],
                  "created_at": NOW - 7200}
                 for i, t in enumerate(["jazz piano improvisation", "street food in bangkok", "rock climbing tips",
                                        "baby elephant playing", "how to tie a tie", "sunset timelapse"])]
        w.produce("uploads", items)
        client = milvus_client(s.milvus)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.has_collection(s.milvus.items_collection) and len(client.get(
                    s.milvus.items_collection, ids=[i["item_id"] for i in items],
                    output_fields=["item_id"])) == len(items):
                break
            time.sleep(0.3)
        users = {"crash-u1", "crash-u2"}
        types = ["like", "view", "complete", "skip", "share", "dislike", "comment", "like", "hide", "view"]
        events = [{"event_id": f"{u}-e{k}", "user_id": u, "item_id": f"c{(k + j) % 6}", "type": types[k],
                   "watch_ms": 5000 if types[k] == "view" else None, "ts": NOW - 3000 + 10 * k}
                  for j, u in enumerate(sorted(users)) for k in range(10)]
        for e in events:
            if e["watch_ms"] is None:
                del e["watch_ms"]
        recs = w.consumer("recommendations")
        w.produce("interactions", events)
        last = {u: [e for e in events if e["user_id"] == u][-1]["event_id"] for u in users}
        poll_until(recs, lambda rs: {decode_recommendation(r.value).source_event_id for r in rs if r.value}
                   >= set(last.values()), 60, w)
        before = changelog_states(s, users)
        assert {u: st.n_events for u, st in before.items()} == {u: 10 for u in users}
        assert committed(s, s.app_id, s.kafka.topics.interactions.name, 8) < len(events)

        w.kill9()
        w.start()  # same group, same state dir: the un-committed events are delivered again
        more = [{"event_id": f"{u}-after", "user_id": u, "item_id": "c5", "type": "like", "ts": NOW}
                for u in sorted(users)]
        w.produce("interactions", more)
        poll_until(recs, lambda rs: {decode_recommendation(r.value).source_event_id for r in rs if r.value}
                   >= {e["event_id"] for e in more}, 90, w)
        recs.close()
        after = changelog_states(s, users)

        # Offline recomputation from the topic's events, each applied once.
        vectors = {r["item_id"]: np.asarray(r["vector"], np.float32)
                   for r in client.get(s.milvus.items_collection, ids=[i["item_id"] for i in items],
                                       output_fields=["vector"])}
        client.close()
        for u in users:
            expected = UserState()
            for e in [e for e in events + more if e["user_id"] == u]:
                ratio = None  # items have no duration: watch ratio unknown
                apply_interaction(expected, e["event_id"], e["item_id"], vectors[e["item_id"]], e["type"], ratio,
                                  e["ts"], s.ranking)
            got = after[u]
            assert got.n_events == 11, f"{u}: {got.n_events} events applied (re-delivery double-applied?)"
            np.testing.assert_allclose(got.sum_vec, expected.sum_vec, rtol=1e-5, atol=1e-6)
    finally:
        w.stop()
        w.drop_collections()
    assert w.starts == 2
