"""Impressions end to end: a real worker (Kafka, Triton, Milvus Lite) counts the lists users were shown and
the interactions attributed to them, scraped from its /metrics; bad impressions are dead-lettered."""

from __future__ import annotations

import time
import urllib.request
import uuid

import orjson
import pytest
import typer
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from typer.testing import CliRunner

from streams.events_cli import register
from streams.items.partitioning import partition_for
from streams.kafka.admin import check_partition_counts, ensure_topics, wait_group_stable
from streams.kafka.exceptions import TopicConfigError
from streams.records import decode_dead_letter, decode_recommendation
from streams.settings import TopicSpec
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack
NOW = time.time()
TITLES = ["fresh pasta at home", "sourdough bread recipe", "vegetable stir fry dinner", "homemade ramen soup",
          "chocolate chip cookies", "knife skills for onions", "supercar acceleration test", "engine oil change",
          "electric suv range review", "vintage muscle car restoration"]
COUNTERS = {"impressions": "avrec_impressions", "impressed_items": "avrec_impressed_items",
            "clicks": "avrec_impression_clicks", "hits": "avrec_impression_hits"}


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    unique = "imp" + uuid.uuid4().hex[:8]
    w = WorkerProcess(worker_env(unique, {"AVREC_WORKER__FANOUT_USERS": "0"}),
                      tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    items = [f"t{i}" for i in range(len(TITLES))]
    w.produce("uploads", [{"event_id": f"up-{i}-{unique}", "item_id": i, "creator_id": f"c{n % 4}", "title": t,
                           "tags": ["test"], "created_at": NOW - 600} for n, (i, t) in enumerate(zip(items, TITLES))])
    wait_in_milvus(w, items)
    yield w
    w.stop()
    w.drop_collections()


def interaction(user: str, item: str, n: int, etype: str = "like") -> dict:
    return {"event_id": f"{user}-{item}-{n}", "user_id": user, "item_id": item, "type": etype, "ts": NOW + n}


def online(w: WorkerProcess, model_version: str) -> dict[str, float]:
    """The worker's four impression counters for one model_version, scraped from /metrics."""
    with urllib.request.urlopen(f"{w.web_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    got = dict.fromkeys(COUNTERS, 0.0)
    names = {v: k for k, v in COUNTERS.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("model_version") == model_version:
                got[names[sample.name.removesuffix("_total")]] = sample.value
    return got


def wait_online(w: WorkerProcess, model_version: str, want: dict[str, float], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (got := online(w, model_version)) != want:
        if not w.alive() or time.monotonic() > deadline:
            pytest.fail(f"online metrics for {model_version}: {got}, expected {want}\n{w.tail()}")
        time.sleep(0.3)


def produce_cli(*args: str):
    """``avrec produce ...`` in-process, as the CLI runs it."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, like the real `avrec` app
        pass

    register(app)
    result = CliRunner().invoke(app, ["produce", *args])
    assert result.exit_code == 0, result.output
    return result


def shown_list(w: WorkerProcess, user: str, event_id: str):
    """The user's list published for ``event_id``, read from the recommendations topic."""
    recs = w.consumer("recommendations")
    try:
        got = poll_until(recs, lambda rs: any(r.key == user.encode() and r.value and
                                              decode_recommendation(r.value).source_event_id == event_id
                                              for r in rs), 90, w)
    finally:
        recs.close()
    return next(rec for r in got if r.key == user.encode() and r.value
                and (rec := decode_recommendation(r.value)).source_event_id == event_id)


def test_clicks_and_hits_are_attributed_to_the_shown_list(worker):
    user = f"u-{uuid.uuid4().hex[:6]}"
    worker.produce("interactions", [interaction(user, "t0", 1), interaction(user, "t6", 2)])
    lst = shown_list(worker, user, f"{user}-t6-2")
    shown = [it.item_id for it in lst.items]
    assert len(shown) >= 2 and "t0" not in shown  # seen items are never recommended: t0 is "not shown"
    mv = lst.model_version
    worker.produce("impressions", [{"event_id": f"imp-{user}", "user_id": user, "items": shown,
                                    "model_version": mv, "list_event_id": lst.source_event_id, "ts": NOW + 10}])
    # Impressions and interactions are different topics (no order between them): the clicks go once the
    # impression has been applied, as a user's clicks follow the list they were shown.
    wait_online(worker, mv, {"impressions": 1, "impressed_items": len(shown), "clicks": 0, "hits": 0})
    worker.produce("interactions", [interaction(user, shown[0], 20, "view"), interaction(user, shown[1], 21, "share"),
                                    interaction(user, "t0", 22, "view"),  # not in the list
                                    interaction(user, shown[0], 23, "complete")])  # the same item again
    wait_online(worker, mv, {"impressions": 1, "impressed_items": len(shown), "clicks": 2, "hits": 1})
    # The last interaction's list is out: every interaction above was applied, and nothing more was counted.
    shown_list(worker, user, f"{user}-{shown[0]}-23")
    assert online(worker, mv) == {"impressions": 1, "impressed_items": len(shown), "clicks": 2, "hits": 1}


def test_an_impression_that_arrives_after_its_clicks_still_gets_them(worker):
    """Impression logs are often sent late (no order across topics): the clicks already applied count then."""
    user, mv = f"l-{uuid.uuid4().hex[:6]}", f"late-{uuid.uuid4().hex[:6]}"  # a label of this test's own
    worker.produce("interactions", [interaction(user, "t2", 1), interaction(user, "t8", 2)])
    lst = shown_list(worker, user, f"{user}-t8-2")
    shown = [it.item_id for it in lst.items]
    worker.produce("interactions", [interaction(user, shown[0], 20, "view"), interaction(user, shown[1], 21, "like"),
                                    interaction(user, shown[2], 22, "skip")])  # not a click
    shown_list(worker, user, f"{user}-{shown[2]}-22")  # all three applied, no impression yet
    worker.produce("impressions", [{"event_id": f"imp-{user}", "user_id": user, "items": shown,
                                    "model_version": mv, "ts": NOW + 10}])
    wait_online(worker, mv, {"impressions": 1, "impressed_items": len(shown), "clicks": 2, "hits": 1})


def test_a_duplicated_impression_counts_once(worker, tmp_path):
    """Sent twice by `avrec produce impressions` (which rejects a bad line), then re-sent: counted once."""
    user, mv = f"d-{uuid.uuid4().hex[:6]}", f"dup-{uuid.uuid4().hex[:6]}"  # a label of this test's own
    imp = {"event_id": f"imp-{user}", "user_id": user, "items": ["t1", "t2", "t3"], "model_version": mv,
           "ts": NOW + 10}
    path = tmp_path / "impressions.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(imp), orjson.dumps({**imp, "items": []}), orjson.dumps(imp)]) + b"\n")
    out = produce_cli("impressions", str(path), "--topic", worker.settings.kafka.topics.impressions.name)
    assert "sent 2, rejected 1, failed 0" in out.stdout and ":2: rejected (validate): Impression: items" in out.stderr
    wait_online(worker, mv, {"impressions": 1, "impressed_items": 3, "clicks": 0, "hits": 0})
    # Re-sent later (a producer's retry), then another impression of the same user: the same partition, so
    # once the second is counted the re-sent one has been handled before it.
    worker.produce("impressions", [imp, {**imp, "event_id": f"imp2-{user}", "items": ["t4", "t5"]}])
    wait_online(worker, mv, {"impressions": 2, "impressed_items": 5, "clicks": 0, "hits": 0})


@pytest.mark.parametrize("value, words", [
    (b'{"event_id": "e", "user_id": "USER", "items": [], "model_version": "m", "ts": 1700000000}', "items"),
    (b'{"event_id": "e", "user_id": "USER", "items": ["a"], "ts": 1700000000}', "model_version: is required"),
    (b'not json', "not valid JSON"),
])
def test_a_malformed_impression_is_dead_lettered_with_a_reason(worker, value, words):
    user = f"m-{uuid.uuid4().hex[:6]}"
    value = value.replace(b"USER", user.encode())
    dlq = worker.consumer("interactions_dlq")
    try:
        worker.produce("impressions", [(user.encode(), value)], raw=True)
        got = poll_until(dlq, lambda rs: any(decode_dead_letter(r.value).original_bytes() == value for r in rs),
                         60, worker)
    finally:
        dlq.close()
    dl = next(d for r in got if (d := decode_dead_letter(r.value)).original_bytes() == value)
    assert dl.stage == ("decode" if value == b"not json" else "validate")
    assert words in dl.error and dl.topic == worker.settings.kafka.topics.impressions.name
    assert dl.key_bytes() == user.encode()
    assert worker.alive()


def test_partition_counts_are_checked_against_the_broker(stack, settings, unique):
    """The worker's start-up check: an impressions topic with another count, or none, stops it with the fix."""
    spec = TopicSpec(name=f"impressions-{unique}", partitions=settings.kafka.topics.interactions.partitions)
    with pytest.raises(TopicConfigError, match=f"missing: {spec.name} \\({spec.partitions} partitions\\)"):
        check_partition_counts(settings.kafka, [spec])
    ensure_topics(settings.kafka, [spec.model_copy(update={"partitions": 3})])
    with pytest.raises(TopicConfigError, match=f"{spec.name}: 3 partitions, configured {spec.partitions}"):
        check_partition_counts(settings.kafka, [spec])


def committed(w: WorkerProcess, topic: str, user: str, timeout: float = 60) -> None:
    """Until the worker's group has committed everything in ``user``'s partition of ``topic``."""
    s = w.settings
    tp = TopicPartition(topic, partition_for(user.encode(), s.kafka.topics.interactions.partitions))
    probe = KafkaConsumer(**s.kafka.kafka_python_config(), group_id=s.app_id, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        while (probe.committed(tp) or 0) < probe.end_offsets([tp])[tp]:
            if time.monotonic() > deadline:
                pytest.fail(f"{tp} not committed after {timeout:.0f} s:\n{w.tail()}")
            time.sleep(0.5)
    finally:
        probe.close()


def test_attribution_state_survives_a_kill9(worker):
    """Kept impressions live in the user's state: after kill -9 and a restart, a click still finds its impression
    and a re-delivered impression is still a duplicate (the new process's counters start at 0)."""
    user, mv = f"k-{uuid.uuid4().hex[:6]}", f"kill-{uuid.uuid4().hex[:6]}"
    imp = {"event_id": f"imp-{user}", "user_id": user, "items": ["t7", "t8"], "model_version": mv, "ts": NOW + 10}
    worker.produce("impressions", [imp])
    wait_online(worker, mv, {"impressions": 1, "impressed_items": 2, "clicks": 0, "hits": 0})
    committed(worker, worker.settings.kafka.topics.impressions.name, user)
    worker.kill9()
    worker.start()
    assert online(worker, mv) == dict.fromkeys(COUNTERS, 0.0)
    worker.produce("interactions", [interaction(user, "t8", 40, "view")])
    wait_online(worker, mv, {"impressions": 0, "impressed_items": 0, "clicks": 1, "hits": 1})
    # Re-sent, then a new impression behind it in the same partition: only the new one counts.
    worker.produce("impressions", [imp, {**imp, "event_id": f"imp2-{user}", "items": ["t9"], "ts": NOW + 50}])
    wait_online(worker, mv, {"impressions": 1, "impressed_items": 1, "clicks": 1, "hits": 1})


def test_two_workers_attribute_each_users_clicks_where_their_impressions_are(stack, tmp_path):
    """Co-partitioned: the worker that owns a user's interactions holds their impressions, so with two workers
    each counts the clicks of its own impressions, and the two together count every one."""
    unique = "imp2" + uuid.uuid4().hex[:8]
    env = worker_env(unique, {"AVREC_WORKER__FANOUT_USERS": "0"})
    workers = [WorkerProcess({**env, "AVREC_WORKER__REPLICA": str(k)}, tmp_path / f"worker{k}.log") for k in range(2)]
    s = workers[0].settings
    n = s.kafka.topics.interactions.partitions
    users, k = {}, 0
    while len(users) < n:  # one user in each partition: both workers own some of them
        users.setdefault(partition_for(f"iw{k}".encode(), n), f"iw{k}")
        k += 1
    mv = f"two-{unique}"
    try:
        for w in workers:
            w.start()
        wait_group_stable(s.kafka, s.app_id, 2, 120)
        items = [f"x{i}" for i in range(3)]
        workers[0].produce("uploads", [{"event_id": f"up-{i}-{unique}", "item_id": i, "creator_id": i, "title": t,
                                        "tags": ["two"], "created_at": NOW - 600}
                                       for i, t in zip(items, TITLES)])
        wait_in_milvus(workers[0], items)
        workers[0].produce("impressions", [{"event_id": f"imp-{u}", "user_id": u, "items": items,
                                            "model_version": mv, "ts": NOW + 10} for u in users.values()])

        def totals() -> tuple[list[dict], dict]:
            each = [online(w, mv) for w in workers]
            return each, {key: sum(e[key] for e in each) for key in COUNTERS}

        deadline = time.monotonic() + 90
        while totals()[1]["impressions"] < n and time.monotonic() < deadline:
            time.sleep(0.3)
        each, total = totals()
        assert total == {"impressions": n, "impressed_items": 3 * n, "clicks": 0, "hits": 0}, each
        assert all(e["impressions"] > 0 for e in each), each  # both workers own users
        workers[0].produce("interactions", [{"event_id": f"{u}-c", "user_id": u, "item_id": "x1", "type": "view",
                                             "ts": NOW + 20} for u in users.values()])
        deadline = time.monotonic() + 90
        while totals()[1]["clicks"] < n and time.monotonic() < deadline:
            time.sleep(0.3)
        each, total = totals()
        assert total == {"impressions": n, "impressed_items": 3 * n, "clicks": n, "hits": n}, each
        assert all(e["clicks"] == e["hits"] == e["impressions"] for e in each), each  # each user's one owner
    finally:
        for w in workers:
            w.stop()
        workers[0].drop_collections()


def wait_in_milvus(w: WorkerProcess, ids: list[str], timeout: float = 180) -> None:
    client = milvus_client(w.settings.milvus)
    name = w.settings.milvus.items_collection
    try:
        deadline = time.monotonic() + timeout
        while not (client.has_collection(name)
                   and len(client.get(name, ids=ids, output_fields=["item_id"])) == len(ids)):
            if time.monotonic() > deadline:
                pytest.fail(f"items {ids} never reached Milvus:\n{w.tail()}")
            time.sleep(0.3)
    finally:
        client.close()
