"""Nothing lost to ordering: interactions before their upload, forget-me racing a user's batch, misrouted keys.

A real worker (Kafka, Triton, Milvus Lite) with a short parking wait. Items are
uploaded through the uploads topic (Triton encodes them), so an item's arrival
is the real upload path, ``up`` record and all.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.items.partitioning import partition_for
from streams.ranking import UserState
from streams.records import decode_dead_letter, decode_recommendation
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack
NOW = time.time()
PARK_WAIT_S = 8.0


def upload(item_id: str, title: str) -> dict:
    return {"event_id": f"up-{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id, "creator_id": "c1",
            "title": title, "tags": ["test"], "created_at": NOW - 600}


def event(user: str, item: str, n: int, etype: str = "like") -> dict:
    return {"event_id": f"{user}-{item}-{n}", "user_id": user, "item_id": item, "type": etype, "ts": NOW + n}


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    unique = "ord" + uuid.uuid4().hex[:8]
    env = worker_env(unique, {"AVREC_WORKER__PARK_MAX_WAIT_S": str(PARK_WAIT_S), "AVREC_WORKER__ITEM_TICK_S": "0.5",
                              "AVREC_WORKER__FANOUT_USERS": "0"})
    w = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    titles = ["pasta carbonara recipe", "bread baking at home", "chess opening traps", "chess endgame study",
              "mountain bike trail", "road cycling climb", "jazz trumpet solo", "piano sonata live"]
    w.produce("uploads", [upload(f"k{i}", t) for i, t in enumerate(titles)])
    wait_in_milvus(w, [f"k{i}" for i in range(len(titles))])
    yield w
    w.stop()
    w.drop_collections()


def wait_in_milvus(w: WorkerProcess, ids: list[str], timeout: float = 120) -> None:
    client = milvus_client(w.settings.milvus)
    name = w.settings.milvus.items_collection
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.has_collection(name) and len(client.get(name, ids=ids, output_fields=["item_id"])) == len(ids):
                return
            time.sleep(0.3)
    finally:
        client.close()
    pytest.fail(f"items {ids} never reached Milvus:\n{w.tail()}")


def latest_states(w: WorkerProcess, users: set[str]) -> dict[str, dict | None]:
    """The last user-state changelog record of each user (None: a tombstone)."""
    s = w.settings
    c = KafkaConsumer(f"{s.app_id}-user-state-changelog", **s.kafka.kafka_python_config(),
                      auto_offset_reset="earliest", enable_auto_commit=False)
    out: dict[str, dict | None] = {}
    idle = 0
    try:
        while idle < 4:
            batch = c.poll(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for recs in batch.values():
                for r in recs:
                    if (u := orjson.loads(r.key)) in users:
                        out[u] = orjson.loads(r.value) if r.value else None
    finally:
        c.close()
    return out


def wait_idle(w: WorkerProcess, timeout: float) -> None:
    """Until the worker has processed (committed) everything in its user topics."""
    from kafka import TopicPartition

    s = w.settings
    n = s.kafka.topics.interactions.partitions
    tps = [TopicPartition(s.kafka.topics.control.name, 0)]  # the forgets are routed from here first
    tps += [TopicPartition(t, p) for t in (s.kafka.topics.interactions.name, f"{s.app_id}-user-commands")
            for p in range(n)]
    probe = KafkaConsumer(**s.kafka.kafka_python_config(), group_id=s.app_id, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(1.5)  # a routed command reaches user-commands before control's offset is committed
            end = probe.end_offsets(tps)
            behind = {tp: end[tp] - (probe.committed(tp) or 0) for tp in tps if end[tp] > (probe.committed(tp) or 0)}
            if not behind:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"worker still behind {behind} after {timeout:.0f} s:\n{w.tail()}")
    finally:
        probe.close()


def lists_by_event(records) -> dict[str, object]:
    return {(rec := decode_recommendation(r.value)).source_event_id: rec for r in records if r.value}


def test_interactions_before_their_upload_are_applied_once_it_lands(worker):
    """Parked, not dead-lettered; the partition keeps flowing; applied once the upload lands."""
    tag = uuid.uuid4().hex[:6]
    late, users = f"late-{tag}", [f"p{tag}-{k}" for k in range(3)]
    recs = worker.consumer("recommendations")
    dlq = worker.consumer("interactions_dlq")
    # Each user: a view of the item that is not uploaded yet, then a like of a known item.
    worker.produce("interactions", [event(u, late, 1, "view") for u in users]
                   + [event(u, "k0", 2) for u in users])
    # The later events are not held up behind the parked ones.
    got = poll_until(recs, lambda rs: all(f"{u}-k0-2" in lists_by_event(rs) for u in users), 60, worker)
    assert not any(f"{u}-{late}-1" in lists_by_event(got) for u in users)
    assert not dlq.poll(timeout_ms=1000)  # parked, not dead-lettered
    worker.produce("uploads", [upload(late, "pasta with late tomatoes")])
    got += poll_until(recs, lambda rs: all(f"{u}-{late}-1" in lists_by_event(got + rs) for u in users), 60, worker)
    states = latest_states(worker, set(users))
    for u in users:
        st = UserState.from_dict(states[u])
        assert list(st.recent_event_ids) == [f"{u}-k0-2", f"{u}-{late}-1"]  # each applied once, the late one last
        assert st.n_events == 2 and late in st.seen
    for c in (recs, dlq):
        c.close()


def test_parked_interactions_are_dead_lettered_only_past_the_wait(worker):
    tag = uuid.uuid4().hex[:6]
    user, never = f"n{tag}", f"never-{tag}"
    dlq = worker.consumer("interactions_dlq")
    sent_at = time.time()
    worker.produce("interactions", [event(user, never, 1)])
    letters = poll_until(dlq, lambda rs: any(decode_dead_letter(r.value).original_bytes()
                                             == orjson.dumps(event(user, never, 1)) for r in rs), 90, worker)
    dl = [decode_dead_letter(r.value) for r in letters][-1]
    assert dl.stage == "unknown_item" and f"not in the catalogue after {PARK_WAIT_S:.0f} s" in dl.error
    assert dl.topic == worker.settings.kafka.topics.interactions.name and dl.key_bytes() == user.encode()
    assert dl.failed_at >= sent_at + PARK_WAIT_S  # never before the wait
    dlq.close()


def test_forget_racing_the_users_batch_keeps_the_user_gone(worker):
    """Forget-me sent while the user's events are queued and being ranked: state, list and vector stay gone.

    Background users keep the worker's batches full and slow, the target users' events sit in the same
    partitions, and each forget goes out right behind its user's events (through the control topic, so
    it may overtake them): every interleaving of "forget" and "batch in flight" is exercised.
    """
    tag = uuid.uuid4().hex[:6]
    targets = [f"f{tag}-{k}" for k in range(6)]
    items = [f"k{i}" for i in range(8)]
    background = [event(f"bg{tag}-{k % 40}", items[k % 8], k) for k in range(1200)]
    recs = worker.consumer("recommendations")
    producer = KafkaProducer(**worker.settings.kafka.kafka_python_config(), acks="all", linger_ms=1)
    t = worker.settings.kafka.topics
    for rec in background[:600]:
        producer.send(t.interactions.name, key=rec["user_id"].encode(), value=orjson.dumps(rec))
    for k, user in enumerate(targets):
        for n in range(5):
            ev = event(user, items[(k + n) % 8], 100 + n)
            producer.send(t.interactions.name, key=user.encode(), value=orjson.dumps(ev))
        producer.flush()
        if k % 2:
            time.sleep(0.05 * k)  # some forgets right behind the events, some a little later
        forget = {"event_id": f"fg-{user}", "action": "forget_user", "user_id": user, "ts": NOW}
        producer.send(t.control.name, key=user.encode(), value=orjson.dumps(forget))
        producer.flush()
    for rec in background[600:]:
        producer.send(t.interactions.name, key=rec["user_id"].encode(), value=orjson.dumps(rec))
    producer.flush()
    wait_idle(worker, 180)
    got = poll_until(recs, lambda rs: all(any(r.key == u.encode() and r.value is None for r in rs) for u in targets),
                     60, worker)
    got += poll_until(recs, lambda rs: True, 1)  # and whatever followed
    last = {}
    for r in got:
        if r.key and r.key.decode() in targets:
            last[r.key.decode()] = r.value
    assert set(last) == set(targets) and all(v is None for v in last.values()), \
        {u: (v is None) for u, v in last.items()}  # the last record of each is the tombstone
    states = latest_states(worker, set(targets))
    for user in targets:
        st = UserState.from_dict(states[user])
        assert (st.n_events, st.sum_vec, st.history, list(st.seen)) == (0, None, [], []), user
        assert st.forgotten_below > 0
    client = milvus_client(worker.settings.milvus)
    try:
        assert client.get(worker.settings.milvus.users_collection, ids=targets) == []
    finally:
        client.close()
    # A forgotten user who comes back starts afresh.
    back = targets[0]
    producer.send(t.interactions.name, key=back.encode(), value=orjson.dumps(event(back, "k3", 500)))
    producer.flush()
    producer.close()
    poll_until(recs, lambda rs: f"{back}-k3-500" in lists_by_event(rs), 60, worker)
    st = UserState.from_dict(latest_states(worker, {back})[back])
    assert list(st.recent_event_ids) == [f"{back}-k3-500"] and st.n_events == 1
    recs.close()


def test_misrouted_records_are_dead_lettered_with_the_reason(worker):
    """One owner per key: a record keyed by someone else, or in another partition than its key's, is refused."""
    tag = uuid.uuid4().hex[:6]
    user = f"m{tag}"
    s = worker.settings
    n = s.kafka.topics.interactions.partitions
    right = partition_for(user.encode(), n)
    wrong_key = orjson.dumps(event(user, "k1", 1))
    wrong_partition = orjson.dumps(event(user, "k2", 2))
    good = event(user, "k4", 3)
    producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all")
    producer.send(s.kafka.topics.interactions.name, key=b"someone-else", value=wrong_key)
    producer.send(s.kafka.topics.interactions.name, key=user.encode(), value=wrong_partition,
                  partition=(right + 1) % n)
    producer.send(s.kafka.topics.interactions.name, key=user.encode(), value=orjson.dumps(good))
    producer.send(s.kafka.topics.uploads.name, key=b"not-the-item", value=orjson.dumps(upload(f"mk{tag}", "x y")))
    producer.flush()
    producer.close()
    dlq, updlq, recs = worker.consumer("interactions_dlq"), worker.consumer("uploads_dlq"), worker.consumer(
        "recommendations")
    letters = poll_until(dlq, lambda rs: {wrong_key, wrong_partition} <= {decode_dead_letter(r.value).original_bytes()
                                                                           for r in rs}, 60, worker)
    by_value = {decode_dead_letter(r.value).original_bytes(): decode_dead_letter(r.value) for r in letters}
    assert by_value[wrong_key].stage == "key" and "is not the interaction's user_id" in by_value[wrong_key].error
    dl = by_value[wrong_partition]
    assert dl.stage == "partition" and f"belongs in partition {right}" in dl.error and "murmur2" in dl.error
    up = poll_until(updlq, lambda rs: any(decode_dead_letter(r.value).stage == "key" for r in rs), 60, worker)
    assert "is not the upload's item_id" in [decode_dead_letter(r.value) for r in up][-1].error
    poll_until(recs, lambda rs: good["event_id"] in lists_by_event(rs), 60, worker)
    st = UserState.from_dict(latest_states(worker, {user})[user])
    assert list(st.recent_event_ids) == [good["event_id"]]  # only the well-routed event was applied
    for c in (dlq, updlq, recs):
        c.close()
