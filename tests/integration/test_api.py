"""The read API against the live stack: two real workers in one group, a learned ranker, real Kafka,
Triton and Milvus. Any worker answers for any user (forwarded to the owner); seen and excluded items
never appear; pages are disjoint; explain adds up to the score; bad input gets 4xx with a reason;
feedback reaches the worker and changes the list, invalid feedback produces nothing."""

from __future__ import annotations

import math
import time
import uuid
from urllib.parse import quote

import httpx
import numpy as np
import orjson
import pytest

from streams.items.partitioning import partition_for
from streams.kafka.admin import wait_group_stable
from streams.ranking.learned import FEATURES, LinearRanker
from streams.vectors.milvus import milvus_client
from tests.explain_checks import listed_score
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

NOW = time.time()
TOPIC_A = ["How to make fresh pasta at home", "Perfect sourdough bread recipe for beginners",
           "Quick vegetable stir fry dinner in 15 minutes", "Homemade ramen noodle soup from scratch",
           "Chocolate chip cookies that stay soft", "Knife skills: how to chop onions like a chef"]
TOPIC_B = ["Supercar acceleration test on the race track", "Changing the engine oil in your pickup truck",
           "Electric SUV highway range review", "Vintage muscle car restoration project",
           "Formula one pit stop explained", "Motorcycle chain maintenance tutorial"]


def _upload(item_id: str, title: str, creator: str) -> dict:
    return {"event_id": f"up-{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id, "creator_id": creator,
            "title": title, "tags": [], "created_at": NOW - 3600}


def _like(user: str, item: str, k: int = 0, kind: str = "like") -> dict:
    return {"event_id": f"ev-{user}-{item}-{uuid.uuid4().hex[:6]}", "user_id": user, "item_id": item, "type": kind,
            "ts": NOW - 600 + k}


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    """Two workers in one group ranking with a (random, standardised) learned ranker, and 12 text items."""
    tmp = tmp_path_factory.mktemp("api")
    d = len(FEATURES)
    rng = np.random.default_rng(11)
    ranker = LinearRanker(rng.normal(size=d), rng.normal(size=d), rng.uniform(0.5, 2.0, size=d))
    ranker.save(tmp / "ranker.json")
    unique = "api" + uuid.uuid4().hex[:8]
    env = worker_env(unique, {"AVREC_RANKING__RANKER_PATH": str(tmp / "ranker.json"),
                              "AVREC_WORKER__FANOUT_USERS": "0"})
    workers = [WorkerProcess({**env, "AVREC_WORKER__REPLICA": str(k)}, tmp / f"worker{k}.log") for k in range(2)]
    try:
        for w in workers:
            w.start()
        s = workers[0].settings
        wait_group_stable(s.kafka, s.app_id, 2, 120)
        items = [_upload(f"a{i}", t, f"chef{i % 3}") for i, t in enumerate(TOPIC_A)]
        items += [_upload(f"b{i}", t, f"garage{i % 3}") for i, t in enumerate(TOPIC_B)]
        workers[0].produce("uploads", items)
        _wait_in_milvus(workers[0], [i["item_id"] for i in items])
        for w in workers:
            _wait_ready(w)
        yield {"workers": workers, "ranker": ranker, "settings": s}
    finally:
        for w in workers:
            w.stop()
        workers[0].drop_collections()


def _wait_in_milvus(w: WorkerProcess, ids: list[str], timeout: float = 180) -> None:
    s = w.settings
    client = milvus_client(s.milvus)
    deadline = time.monotonic() + timeout
    while not (client.has_collection(s.milvus.items_collection)
               and len(client.get(s.milvus.items_collection, ids=ids, output_fields=["item_id"])) == len(ids)):
        assert time.monotonic() < deadline, f"items never reached Milvus:\n{w.tail()}"
        time.sleep(0.5)
    client.close()


def _wait_ready(w: WorkerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{w.web_url}/health/ready", timeout=10)
        if r.status_code == 200:
            assert r.json()["status"] == "ready" and r.json()["partitions"] > 0
            return
        assert r.status_code == 503 and r.json()["status"] == "not_ready" and r.json()["reason"]
        assert time.monotonic() < deadline, f"never ready: {r.json()}\n{w.tail()}"
        time.sleep(0.5)


def _get(w: WorkerProcess, path: str, **params) -> httpx.Response:
    return httpx.get(f"{w.web_url}{path}", params=params, timeout=30)


def _recs(w: WorkerProcess, user: str, **params) -> dict:
    r = _get(w, f"/users/{quote(user, safe='')}/recommendations", **params)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_applied(w: WorkerProcess, user: str, n_events: int, timeout: float = 60) -> dict:
    """The user inspector once the owner has applied ``n_events`` of the user's events."""
    deadline = time.monotonic() + timeout
    while True:
        r = _get(w, f"/users/{quote(user, safe='')}")
        if r.status_code == 200 and r.json()["n_events"] >= n_events:
            return r.json()
        assert time.monotonic() < deadline, f"{user}: {r.status_code} {r.text[:300]}\n{w.tail()}"
        time.sleep(0.3)


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_health(cluster):
    for w in cluster["workers"]:
        assert _get(w, "/health/live").json() == {"status": "live"}
        ready = _get(w, "/health/ready")
        assert ready.status_code == 200 and ready.json()["model_version"].endswith(cluster["ranker"].fingerprint())


def test_seen_and_excluded_items_never_appear_and_pages_are_disjoint(cluster):
    w0, w1 = cluster["workers"]
    user = f"u-{uuid.uuid4().hex[:6]}"
    seen = ["a0", "a1", "b0"]
    w0.produce("interactions", [_like(user, item, k) for k, item in enumerate(seen)])
    inspector = _wait_applied(w1, user, len(seen))
    assert inspector["known_user"] is True
    assert [h["item_id"] for h in inspector["history"]] == seen[::-1]  # newest first, with titles
    assert inspector["history"][0]["title"] == TOPIC_B[0]
    assert set(inspector["candidates"]) == {"ann", "cooc", "fresh", "trending"} and inspector["candidates"]["ann"]
    full = _recs(w0, user, n=9)
    ids = _ids(full)
    assert full["known_user"] is True and len(ids) == 9  # 12 items, 3 seen
    assert not set(ids) & set(seen)
    assert all(i["reasons"] for i in full["items"])
    assert [i["item_id"] for i in inspector["list"]] == ids[:len(inspector["list"])]
    # Exclude: comma-separated and repeated; the list is the best one without them.
    excluded = {ids[0], ids[3], ids[5]}
    got = _ids(_recs(w1, user, n=9, exclude=[f"{ids[0]},{ids[3]}", ids[5]]))
    assert not set(got) & (excluded | set(seen)) and len(got) == 6
    assert set(got) == set(ids) - excluded
    # Pages of one ranking: disjoint, and together the first n + offset.
    p1, p2, p3 = (_ids(_recs(w, user, n=3, offset=o)) for w, o in ((w0, 0), (w1, 3), (w0, 6)))
    assert len(p1) == len(p2) == len(p3) == 3
    assert p1 + p2 + p3 == ids
    assert _ids(_recs(w1, user, n=5, offset=7)) == ids[7:]  # only 2 left


def test_explain_adds_up_to_the_score_with_the_learned_ranker(cluster):
    w0, w1 = cluster["workers"]
    ranker = cluster["ranker"]
    user = f"x-{uuid.uuid4().hex[:6]}"
    w1.produce("interactions", [_like(user, "a2", 0), _like(user, "a3", 1, "complete")])
    _wait_applied(w0, user, 2)
    body = _recs(w0, user, n=10, explain="true")
    v = body["versions"]
    assert v["ranker"] == ranker.fingerprint() and body["model_version"] == v["model_version"]
    assert v["model_version"] == f"hybrid-v1+ranker-{ranker.fingerprint()}"
    assert v["encoders"]["text"]["sha256"] and v["encoders"]["audio"]["weights"] == "built-in"
    assert body["items"]
    for item in body["items"]:
        e = item["explain"]
        assert e["method"] == "learned" and e["adds_up_to"] == "ranker_score"
        assert set(e["contributions"]) == set(FEATURES)
        assert abs(sum(e["contributions"].values()) + e["intercept"] - e["total"]) < 1e-6
        assert math.isclose(item["score"], listed_score(e), rel_tol=1e-9)
        # Each contribution is the ranker's weight times the standardised feature value.
        for f in ("content_cos", "log_age_h"):
            k = FEATURES.index(f)
            want = ranker.weights[k] * (e["features"][f] - ranker.mean[k]) / ranker.scale[k]
            assert e["contributions"][f] == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert set(e["sources"]) == {"ann", "cooc", "fresh", "trending"} and e["sources"] == item["sources"]
    assert "explain" not in _recs(w0, user)["items"][0] and "versions" not in _recs(w0, user)


def test_two_workers_give_the_same_answer_for_every_user(cluster):
    w0, w1 = cluster["workers"]
    n = cluster["settings"].kafka.topics.interactions.partitions
    users, k = {}, 0
    tag = uuid.uuid4().hex[:5]
    while len(users) < n:  # one user in each partition: each worker owns some of them
        users.setdefault(partition_for(f"{tag}{k}".encode(), n), f"{tag}{k}")
        k += 1
    w0.produce("interactions", [_like(u, f"b{p % 6}", 0) for p, u in users.items()])
    for u in users.values():
        _wait_applied(w0, u, 1)
    owners = set()
    for u in users.values():
        a, b = _recs(w0, u, n=8), _recs(w1, u, n=8)
        assert a["served_by"] == b["served_by"]
        owners.add(a["served_by"])
        assert _ids(a) == _ids(b) and [i["reasons"] for i in a["items"]] == [i["reasons"] for i in b["items"]]
        # Scores move with the clock (freshness, trending decay) between the two reads, and only by that much.
        assert [i["score"] for i in a["items"]] == pytest.approx([i["score"] for i in b["items"]], rel=1e-3)
    assert owners == {w0.web_url, w1.web_url}


def test_an_unknown_user_gets_the_cold_start_list(cluster):
    body = _recs(cluster["workers"][1], f"nobody-{uuid.uuid4().hex[:6]}", n=5)
    assert body["known_user"] is False and len(body["items"]) == 5


@pytest.mark.parametrize("path,params,status,words", [
    ("/users/a'b/recommendations", {}, 400, "invalid user id"),
    ("/users/%20/recommendations", {}, 400, "must be a non-empty string"),
    ("/users/ok/recommendations", {"n": "ten"}, 400, "n must be an integer"),
    ("/users/ok/recommendations", {"n": "0"}, 400, "n must be between"),
    ("/users/ok/recommendations", {"offset": "-2"}, 400, "offset must be between"),
    ("/users/ok/recommendations", {"n": "90", "offset": "20"}, 400, "n + offset"),
    ("/users/ok/recommendations", {"explain": "perhaps"}, 400, "explain must be true or false"),
    ("/users/ok/recommendations", {"exclude": "x,y\\z"}, 400, "item id in exclude"),
    ("/users/" + "u" * 129, {}, 400, "at most 128 characters"),
    ("/items/nope-never-uploaded", {}, 404, "not in the catalogue"),
    ("/items/nope-never-uploaded/similar", {}, 404, "not in the catalogue"),
    ("/items/a'0", {}, 400, "invalid item id"),
    ("/items/a0/similar", {"n": "x"}, 400, "n must be an integer"),
])
def test_bad_input_gets_4xx_with_a_reason(cluster, path, params, status, words):
    for w in cluster["workers"]:
        r = _get(w, path, **params)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]


def test_items_similar_and_inspector(cluster):
    w0, w1 = cluster["workers"]
    sim = _get(w1, "/items/a0/similar", n=5).json()
    assert sim["item_id"] == "a0" and len(sim["items"]) == 5
    assert all(i["item_id"].startswith("a") for i in sim["items"]), sim  # the other 5 cooking items first
    assert sim["items"][0]["title"] in TOPIC_A and "a0" not in [i["item_id"] for i in sim["items"]]
    more = [i["item_id"] for i in _get(w0, "/items/b2/similar", n=11).json()["items"]]
    assert sorted(more) == sorted(f"{t}{k}" for t in "ab" for k in range(6) if f"{t}{k}" != "b2")
    assert all(i.startswith("b") for i in more[:3]), more  # the cars first
    scores = [i["score"] for i in _get(w0, "/items/b2/similar", n=11).json()["items"]]
    assert scores == sorted(scores, reverse=True)
    item = _get(w0, "/items/b3").json()
    assert item["title"] == TOPIC_B[3] and item["creator_id"] == "garage0" and item["taken_down"] is False
    assert item["modalities"] == {"text": True, "audio": False, "video": False} and item["available"] is True
    assert item["created_at"] == pytest.approx(NOW - 3600, abs=1e-3)
    assert [n["item_id"][0] for n in item["neighbours"][:3]] == ["b"] * 3 and len(item["neighbours"]) == 10


def test_feedback_reaches_the_owner_and_changes_the_list(cluster):
    w0, w1 = cluster["workers"]
    user = f"fb-{uuid.uuid4().hex[:6]}"
    before = _recs(w0, user, n=10)
    assert before["known_user"] is False
    events = [_like(user, "b1", 0), _like(user, "b4", 1, "complete")]
    r = httpx.post(f"{w1.web_url}/feedback", content=orjson.dumps(events), timeout=30)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "event_ids": [e["event_id"] for e in events]}
    r = httpx.post(f"{w0.web_url}/feedback", json=_like(user, "b5", 2), timeout=30)  # one object
    assert r.status_code == 202 and r.json()["accepted"] == 1
    _wait_applied(w1, user, 3)
    after = _recs(w1, user, n=10)
    assert after["known_user"] is True and not {"b1", "b4", "b5"} & set(_ids(after))
    assert _ids(after) != _ids(before)


def test_invalid_feedback_is_refused_with_details_and_nothing_is_sent(cluster):
    w0, _ = cluster["workers"]
    user = f"bad-{uuid.uuid4().hex[:6]}"
    good, bad = _like(user, "a1"), {**_like(user, "a2"), "type": "clap"}
    r = httpx.post(f"{w0.web_url}/feedback", content=orjson.dumps([good, bad]), timeout=30)
    assert r.status_code == 422
    body = r.json()
    assert "nothing was sent" in body["error"]
    assert body["details"] == [{"index": 1, "stage": "validate", "fields": ["type"],
                                "reason": body["details"][0]["reason"]}] and "type" in body["details"][0]["reason"]
    r = httpx.post(f"{w0.web_url}/feedback", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["details"][0]["stage"] == "decode"
    r = httpx.post(f"{w0.web_url}/feedback", content=b"[" + b" " * (1024 * 1024 + 10) + b"]", timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    marker = _like(user, "a3")
    assert httpx.post(f"{w0.web_url}/feedback", json=marker, timeout=30).status_code == 202
    consumer = w0.consumer("interactions")
    got = poll_until(consumer, lambda rs: any(orjson.loads(x.value)["event_id"] == marker["event_id"]
                                              for x in rs if x.key == user.encode()), 60, w0)
    mine = [orjson.loads(x.value)["event_id"] for x in got if x.key == user.encode()]
    assert mine == [marker["event_id"]]  # neither the good nor the bad record of the refused body
    # Keyed by user id with Kafka's default partitioner: the user's partition.
    n = cluster["settings"].kafka.topics.interactions.partitions
    assert {x.partition for x in got if x.key == user.encode()} == {partition_for(user.encode(), n)}
    consumer.close()


def test_openapi_and_docs_are_served(cluster):
    w = cluster["workers"][0]
    doc = _get(w, "/openapi.json").json()
    from openapi_spec_validator import validate

    validate(doc)
    assert "/users/{user_id}/recommendations" in doc["paths"]
    page = _get(w, "/docs")
    assert page.status_code == 200 and "GET /items/{item_id}/similar" in page.text


def test_blend_explanations_takedowns_and_reads_publish_nothing(stack, tmp_path):
    """One worker ranking with the weighted blend: source contributions add up to the score; a taken-down
    item is flagged and never listed; reading lists publishes no list and changes no state."""
    from streams.records import decode_recommendation

    unique = "apib" + uuid.uuid4().hex[:8]
    w = WorkerProcess(worker_env(unique, {"AVREC_RANKING__FUSION": "weighted", "AVREC_WORKER__FANOUT_USERS": "0"}),
                      tmp_path / "worker.log")
    w.start()
    try:
        items = [_upload(f"a{i}", t, f"chef{i}") for i, t in enumerate(TOPIC_A)]
        w.produce("uploads", items)
        _wait_in_milvus(w, [i["item_id"] for i in items])  # all six rankable before the first list
        _wait_ready(w)
        user = f"bl-{uuid.uuid4().hex[:6]}"
        recs = w.consumer("recommendations")
        first = _like(user, "a0")
        w.produce("interactions", [first])
        got = poll_until(recs, lambda rs: any(r.key == user.encode() for r in rs), 120, w)
        body = _recs(w, user, n=5, explain="true")
        assert len(body["items"]) == 5 and body["model_version"] == "hybrid-v1" and body["versions"]["ranker"] is None
        for item in body["items"]:
            e = item["explain"]
            assert e["method"] == "weighted" and e["adds_up_to"] == "score" and e["total"] == item["score"]
            assert abs(sum(e["contributions"].values()) + e["intercept"] - item["score"]) < 1e-6
            assert e["contributions"] == item["sources"]
        before = _get(w, f"/users/{user}").json()
        for _ in range(3):
            _recs(w, user, n=10, explain="true")
            _get(w, f"/users/{user}")
        assert _get(w, f"/users/{user}").json()["history"] == before["history"]
        victim = body["items"][0]["item_id"]
        w.produce("control", [{"event_id": f"td-{unique}", "action": "takedown", "item_id": victim, "ts": NOW}])
        deadline = time.monotonic() + 60
        while not (item := _get(w, f"/items/{victim}").json()).get("taken_down"):
            assert time.monotonic() < deadline, item
            time.sleep(0.3)
        assert item["available"] is False and item["neighbours"] == []
        assert victim not in _ids(_recs(w, user, n=5))
        assert _get(w, f"/items/{victim}/similar").status_code == 404
        # A marker event's list arrives after any list the reads above could have published: there is none.
        marker = _like(user, "a1", 5)
        w.produce("interactions", [marker])
        got += poll_until(recs, lambda rs: any(r.key == user.encode() and r.value and
                                               decode_recommendation(r.value).source_event_id == marker["event_id"]
                                               for r in rs), 60, w)
        sources = [decode_recommendation(r.value).source_event_id for r in got if r.key == user.encode() and r.value]
        assert sources == [first["event_id"], marker["event_id"]]
        recs.close()
    finally:
        w.stop()
        w.drop_collections()
