"""``/metrics`` of a real worker (real Kafka, Triton, Milvus) counts what the test sent it."""

from __future__ import annotations

import time
import urllib.request
import uuid

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.exceptions import VectorStoreError
from streams.records import decode_dead_letter, decode_recommendation
from streams.vectors.collections import MODALITY_FIELDS, ItemCollection
from streams.vectors.milvus import milvus_client
from streams.web.calls import milvus_calls
from streams.web.metrics import REGISTRY
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

NOW = time.time()
TITLES = ["Fresh pasta at home", "Sourdough bread for beginners", "Engine oil change on a pickup",
          "Electric SUV range review", "Chocolate chip cookies"]
N_UPLOADS = len(TITLES)


def scrape(worker: WorkerProcess) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def scrape_until(worker: WorkerProcess, predicate, timeout: float = 60.0) -> dict:
    """Scrape until ``predicate(samples)`` holds; the last scrape is in the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(worker)
        if predicate(samples):
            return samples
        if not worker.alive():
            raise RuntimeError(f"worker died:\n{worker.tail()}")
        if time.monotonic() > deadline:
            shown = "\n".join(f"{n}{dict(labels)} {v}" for (n, labels), v in sorted(samples.items()))
            raise TimeoutError(f"metrics never matched in {timeout}s; last scrape:\n{shown}\n{worker.tail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    w = WorkerProcess(worker_env("metrics" + uuid.uuid4().hex[:8]), tmp_path_factory.mktemp("worker") / "w.log")
    w.start()
    yield w
    w.stop()
    w.drop_collections()


def test_metrics_count_what_the_worker_was_sent(worker):
    s = worker.settings
    t = s.kafka.topics
    uploads = [{"event_id": f"up-m{i}-{uuid.uuid4().hex[:6]}", "item_id": f"m{i}", "creator_id": f"c{i}",
                "title": title, "tags": [], "created_at": NOW - 3600} for i, title in enumerate(TITLES)]
    worker.produce("uploads", uploads)
    # The uploads are encoded and in the catalogue (Triton and Milvus were called) before the users come.
    scrape_until(worker, lambda m: sample(m, "avrec_events_in_total", topic=t.uploads.name) == N_UPLOADS
                 and (sample(m, "avrec_milvus_request_seconds_count", operation="upsert") or 0) > 0, 120)

    users = [f"user-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    # Two users like three items each (m0..m3): taste vectors, personal lists.
    interactions = [{"event_id": f"ev-{u}-{k}", "user_id": u, "item_id": f"m{k + n}", "type": "like",
                     "ts": NOW - 60 + k} for n, u in enumerate(users[:2]) for k in range(3)]
    # The third likes and dislikes m4, which nobody else touched, at one instant: the two pulls cancel
    # exactly (no taste vector) and m4 has no co-occurring items. The list after the dislike is ranked
    # by the fallbacks alone: a cold-start list (the list after the like alone, if the two land in
    # different batches, is not).
    cold = users[2]
    interactions += [{"event_id": f"ev-{cold}-{kind}", "user_id": cold, "item_id": "m4", "type": kind,
                      "ts": NOW - 30} for kind in ("like", "dislike")]
    recs = worker.consumer("recommendations")
    dlq = worker.consumer("interactions_dlq")
    worker.produce("interactions", interactions)
    worker.produce("interactions", [(users[0].encode(), b"{not json")], raw=True)
    last = {u: [e for e in interactions if e["user_id"] == u][-1]["event_id"] for u in users}
    lists = poll_until(recs, lambda rs: {(r.key.decode(), decode_recommendation(r.value).source_event_id)
                                         for r in rs if r.value} >= set(last.items()), 60, worker)
    letters = poll_until(dlq, lambda rs: len(rs) >= 1, 60, worker)
    stage = decode_dead_letter(letters[0].value).stage
    published = [decode_recommendation(r.value) for r in lists if r.value]

    m = scrape_until(worker, lambda m: (
        sample(m, "avrec_events_in_total", topic=t.interactions.name) == len(interactions) + 1
        and (sample(m, "avrec_lists_out_total", topic=t.recommendations.name) or 0) >= len(published)
        # Caught up: every assigned partition of the input topics is reported, and at 0.
        and {labels for labels in series(m, "avrec_consumer_lag") if dict(labels)["topic"] in
             (t.uploads.name, t.interactions.name)} == {
            (("partition", str(p)), ("topic", topic.name)) for topic in (t.uploads, t.interactions)
            for p in range(topic.partitions)}
        and not any(series(m, "avrec_consumer_lag").values())))

    assert sample(m, "avrec_events_in_total", topic=t.uploads.name) == N_UPLOADS
    lists_out = sample(m, "avrec_lists_out_total", topic=t.recommendations.name)
    # Every list named a real event time: one freshness observation per list.
    assert sample(m, "avrec_freshness_seconds_count") == lists_out
    assert 0 < sample(m, "avrec_freshness_seconds_sum") < lists_out * 3600
    assert sample(m, "avrec_dead_letters_total", topic=t.interactions_dlq.name, stage=stage) == 1
    assert sum(series(m, "avrec_dead_letters_total").values()) == 1

    triton = series(m, "avrec_triton_request_seconds_count")
    assert sum(triton.values()) >= N_UPLOADS  # one item_encoder request per upload at least
    assert sum(series(m, "avrec_triton_errors_total").values()) == 0
    milvus = series(m, "avrec_milvus_request_seconds_count")
    for op in ("upsert", "search"):  # items are cached from their uploads: a "get" is not certain here
        assert milvus.get((("operation", op),), 0) > 0, (op, milvus)
    assert sum(series(m, "avrec_milvus_errors_total").values()) == 0
    assert sample(m, "avrec_circuit_breaker_state", service="triton") == 0

    info = series(m, "avrec_model_info")
    assert len(info) == 1
    labels = dict(next(iter(info)))
    assert labels["model_version"] == published[-1].model_version  # what the lists say made them
    assert labels["base_version"] == s.model_version and labels["fusion"] == s.ranking.fusion

    # Coverage: the distinct items of every list published so far over the 5 uploads. The catalogue count
    # is refreshed every few seconds, so the gauge may need one refresh to see the last upload.
    lists += poll_until(recs, lambda rs: len([r for r in lists + rs if r.value]) >= lists_out, 30, worker)
    listed = {i.item_id for r in lists if r.value for i in decode_recommendation(r.value).items}
    assert 0 < len(listed) <= N_UPLOADS
    coverage = len(listed) / N_UPLOADS
    scrape_until(worker, lambda m: sample(m, "avrec_catalogue_coverage_ratio") == pytest.approx(coverage), 30)
    cold_lists = [r for r in lists if r.value and decode_recommendation(r.value).source_event_id == f"ev-{cold}-dislike"]
    assert len(cold_lists) == 1
    assert sample(m, "avrec_cold_start_lists_ratio") == pytest.approx(1 / lists_out)
    recs.close()
    dlq.close()


def test_milvus_calls_report_their_duration_and_failures(stack, settings, unique):
    """Against real Milvus: one sample per collection call, and an error counted for a call Milvus refuses."""
    client = milvus_client(settings.milvus)
    items = ItemCollection(client, f"metrics_items_{unique}", 8, timeout_s=30)
    items.observe = milvus_calls
    missing = ItemCollection(client, f"metrics_missing_{unique}", 8, timeout_s=30)
    missing.observe = milvus_calls

    def count(name: str, op: str) -> float:
        return REGISTRY.get_sample_value(name, {"operation": op}) or 0.0

    before = {op: (count("avrec_milvus_request_seconds_count", op), count("avrec_milvus_errors_total", op))
              for op in ("ensure", "upsert", "get", "search", "drop")}
    try:
        items.ensure()
        vec = np.eye(8, dtype=np.float32)[0]
        items.upsert([{"item_id": "x", "vector": vec.tolist(), **{f: vec.tolist() for f in MODALITY_FIELDS},
                       "creator_id": "c", "title": "t", "tags": "", "created_at": 0, "available": True,
                       "modalities": "text", "duration_s": 0.0}])
        assert items.search_ids(vec[None, :], 1)[0][0][0] == "x"
        with pytest.raises(VectorStoreError, match="get items"):
            missing.get(["x"])  # no such collection: Milvus answers with an error
    finally:
        items.drop()
        client.close()
    after = {op: (count("avrec_milvus_request_seconds_count", op), count("avrec_milvus_errors_total", op))
             for op in before}
    delta = {op: (after[op][0] - before[op][0], after[op][1] - before[op][1]) for op in before}
    assert delta == {"ensure": (1, 0), "upsert": (1, 0), "search": (1, 0), "get": (1, 1), "drop": (1, 0)}
