"""The streaming recommender end to end: real Kafka, Triton, Milvus and a real worker process."""

from __future__ import annotations

import csv
import time
import uuid

import orjson
import pytest

from streams.records import decode_dead_letter, decode_recommendation
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

NOW = time.time()
TOPIC_A = [
    ("How to make fresh pasta at home", ["cooking", "pasta"]),
    ("Perfect sourdough bread recipe for beginners", ["cooking", "baking"]),
    ("Quick vegetable stir fry dinner in 15 minutes", ["cooking"]),
    ("Homemade ramen noodle soup from scratch", ["cooking"]),
    ("Chocolate chip cookies that stay soft", ["baking", "dessert"]),
    ("Knife skills: how to chop onions like a chef", ["cooking"]),
]
TOPIC_B = [
    ("Supercar acceleration test on the race track", ["cars"]),
    ("Changing the engine oil in your pickup truck", ["cars", "diy"]),
    ("Electric SUV highway range review", ["cars", "ev"]),
    ("Vintage muscle car restoration project", ["cars"]),
    ("Formula one pit stop explained", ["racing"]),
    ("Motorcycle chain maintenance tutorial", ["motorbike"]),
]


def upload(item_id: str, title: str, tags: list[str], creator: str, **extra) -> dict:
    return {"event_id": f"up-{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id, "creator_id": creator,
            "title": title, "tags": tags, "created_at": NOW - 3600, **extra}


def latest_list(records, user: str):
    recs = [decode_recommendation(r.value) for r in records if r.key == user.encode() and r.value]
    return recs[-1] if recs else None


@pytest.fixture(scope="module")
def worker(stack, tmp_path_factory):
    unique = "e2e" + uuid.uuid4().hex[:8]
    # An interaction naming an unknown item is parked until its upload; here it gives up after 2 s.
    env = worker_env(unique, {"AVREC_WORKER__PARK_MAX_WAIT_S": "2", "AVREC_WORKER__ITEM_TICK_S": "0.5"})
    w = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    yield w
    w.stop()
    w.drop_collections()


@pytest.fixture(scope="module")
def catalogue(worker, shared_data_optional):
    """Topic-A and topic-B text items, plus the real MicroLens videos when ../shared is present."""
    items = [upload(f"a{i}", t, tags, f"chef{i % 3}") for i, (t, tags) in enumerate(TOPIC_A)]
    items += [upload(f"b{i}", t, tags, f"garage{i % 3}") for i, (t, tags) in enumerate(TOPIC_B)]
    videos = []
    if shared_data_optional is not None:
        sample = shared_data_optional / "microlens-sample"
        titles = {}
        with (sample / "MicroLens-50k_titles.csv").open(newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                titles[row["item"]] = row["title"]
        for clip in ("1002", "10034", "10040"):
            uri = (sample / f"{clip}.mp4").as_uri()
            videos.append(upload(f"ml{clip}", titles.get(clip, f"micro video {clip}"), ["microlens"], "microlens",
                                 audio_uri=uri, video_uri=uri))
    worker.produce("uploads", items + videos)
    client = milvus_client(worker.settings.milvus)
    name = worker.settings.milvus.items_collection
    want = {i["item_id"] for i in items + videos}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if client.has_collection(name) and len(client.get(name, ids=list(want), output_fields=["item_id"])) == len(want):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"items never all reached Milvus:\n{worker.tail()}")
    rows = client.get(name, ids=[v["item_id"] for v in videos], output_fields=["modalities"])
    client.close()
    return {"items": items, "videos": videos, "video_rows": rows}


@pytest.fixture(scope="module")
def shared_data_optional():
    from tests.conftest import SHARED_DATA

    return SHARED_DATA if SHARED_DATA.is_dir() else None


def test_topic_a_fan_ranks_topic_a_first_and_gets_new_uploads_by_fan_out(worker, catalogue):
    if catalogue["videos"]:
        assert all(r["modalities"] == "text,audio,video" for r in catalogue["video_rows"])
    user = f"user-{uuid.uuid4().hex[:6]}"
    likes = [{"event_id": f"ev-{user}-{i}", "user_id": user, "item_id": f"a{i}", "type": t, "ts": NOW - 600 + i}
             for i, t in enumerate(["like", "complete", "like"])]
    consumer = worker.consumer("recommendations")
    worker.produce("interactions", likes)
    got = poll_until(consumer, lambda rs: (r := latest_list(rs, user)) is not None
                     and r.source_event_id == likes[-1]["event_id"], 60, worker)
    rec = latest_list(got, user)
    ranked = [i.item_id for i in rec.items]
    assert all(i.reasons for i in rec.items), "every item carries a reason"
    seen = {e["item_id"] for e in likes}
    assert not seen & set(ranked), "items the user already interacted with are not recommended"
    a_ranks = [k for k, i in enumerate(ranked) if i.startswith("a")]
    b_ranks = [k for k, i in enumerate(ranked) if i.startswith("b")]
    assert a_ranks and (not b_ranks or max(a_ranks) < min(b_ranks)), ranked
    assert any("you" in r for i in rec.items if i.item_id.startswith("a") for r in i.reasons)

    # A new topic-A upload reaches this user's list through the fan-out: no new interaction from them.
    new = upload("a-new", "Grandma's lasagna recipe with homemade pasta sheets", ["cooking", "pasta"], "chef9",
                 created_at=NOW - 60)
    worker.produce("uploads", [new])
    got += poll_until(consumer, lambda rs: any(
        r.key == user.encode() and decode_recommendation(r.value).source_event_id == new["event_id"]
        for r in rs if r.value), 60, worker)
    fanned = [decode_recommendation(r.value) for r in got
              if r.key == user.encode() and r.value and decode_recommendation(r.value).source_event_id == new["event_id"]]
    assert "a-new" in [i.item_id for i in fanned[-1].items]
    consumer.close()


def test_bad_events_are_dead_lettered_and_the_worker_keeps_going(worker, catalogue):
    user = f"user-{uuid.uuid4().hex[:6]}"
    bad = [
        (b"k", b"\xff\xfe not utf-8"),
        (b"k", b"{not json"),
        (user.encode(), orjson.dumps({"event_id": "x1", "user_id": user, "type": "like", "ts": NOW})),  # no item
        (user.encode(), orjson.dumps({"event_id": "x2", "user_id": user, "item_id": "nope", "type": "like",
                                      "ts": NOW})),  # unknown item
        (user.encode(), orjson.dumps({"event_id": "x3", "user_id": user, "item_id": "a1", "type": "like",
                                      "ts": NOW + 10 * 86400})),  # future timestamp
    ]
    good = {"event_id": f"ok-{user}", "user_id": user, "item_id": "a2", "type": "like", "ts": NOW}
    dlq = worker.consumer("interactions_dlq")
    recs = worker.consumer("recommendations")
    worker.produce("interactions", bad, raw=True)
    worker.produce("interactions", [good])
    letters = poll_until(dlq, lambda rs: len(rs) >= len(bad), 60, worker)
    stages = sorted(decode_dead_letter(r.value).stage for r in letters)
    assert stages.count("decode") == 2 and stages.count("validate") == 2 and stages.count("unknown_item") == 1
    originals = {decode_dead_letter(r.value).original_bytes() for r in letters}
    assert {v for _, v in bad} <= originals
    assert any("future" in decode_dead_letter(r.value).error for r in letters)
    unknown = [decode_dead_letter(r.value) for r in letters if decode_dead_letter(r.value).stage == "unknown_item"]
    assert "'nope' is not in the catalogue after 2 s" in unknown[0].error
    assert unknown[0].topic == worker.settings.kafka.topics.interactions.name  # where it came from, not the parking
    poll_until(recs, lambda rs: (r := latest_list(rs, user)) is not None and r.source_event_id == good["event_id"],
               60, worker)
    # Media that may not be read is dead-lettered at the media stage, with the reason.
    updlq = worker.consumer("uploads_dlq")
    worker.produce("uploads", [upload("evil", "evil", [], "x", video_uri="file:///etc/passwd"),
                               upload("evil2", "evil", [], "x", video_uri="ftp://example.com/a.mp4")])
    letters = poll_until(updlq, lambda rs: len(rs) >= 2, 60, worker)
    assert {decode_dead_letter(r.value).stage for r in letters} == {"media"}
    assert worker.alive()
    for c in (dlq, recs, updlq):
        c.close()


def test_taken_down_item_never_appears_again(worker, catalogue):
    user = f"user-{uuid.uuid4().hex[:6]}"
    consumer = worker.consumer("recommendations")
    worker.produce("interactions", [{"event_id": f"t1-{user}", "user_id": user, "item_id": "a0", "type": "like",
                                     "ts": NOW}])
    got = poll_until(consumer, lambda rs: latest_list(rs, user) is not None, 60, worker)
    victim = next(i.item_id for i in latest_list(got, user).items if i.item_id.startswith("a"))
    worker.produce("control", [{"event_id": f"td-{victim}", "action": "takedown", "item_id": victim, "ts": NOW}])
    client = milvus_client(worker.settings.milvus)
    deadline = time.monotonic() + 30
    while client.get(worker.settings.milvus.items_collection, ids=[victim]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert client.get(worker.settings.milvus.items_collection, ids=[victim]) == []
    client.close()
    events = [{"event_id": f"t{k}-{user}", "user_id": user, "item_id": f"a{k}", "type": "like", "ts": NOW + k}
              for k in range(2, 5) if f"a{k}" != victim]
    worker.produce("interactions", events)
    got = poll_until(consumer, lambda rs: (r := latest_list(rs, user)) is not None
                     and r.source_event_id == events[-1]["event_id"], 60, worker)
    after = [decode_recommendation(r.value) for r in got if r.key == user.encode() and r.value]
    last = after[-1]
    assert victim not in [i.item_id for i in last.items]
    consumer.close()


def test_forget_me_removes_state_vector_and_lists(worker, catalogue):
    user = f"user-{uuid.uuid4().hex[:6]}"
    consumer = worker.consumer("recommendations")
    worker.produce("interactions", [{"event_id": f"f1-{user}", "user_id": user, "item_id": "b1", "type": "like",
                                     "ts": NOW}])
    poll_until(consumer, lambda rs: latest_list(rs, user) is not None, 60, worker)
    client = milvus_client(worker.settings.milvus)
    users = worker.settings.milvus.users_collection
    deadline = time.monotonic() + 30
    while not client.get(users, ids=[user]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert client.get(users, ids=[user])
    worker.produce("control", [{"event_id": f"fg-{user}", "action": "forget_user", "user_id": user, "ts": NOW}])
    tomb = poll_until(consumer, lambda rs: any(r.key == user.encode() and r.value is None for r in rs), 60, worker)
    assert tomb
    deadline = time.monotonic() + 30
    while client.get(users, ids=[user]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert client.get(users, ids=[user]) == []
    client.close()
    # The state table's changelog now holds an empty state for the user: nothing of theirs is left but
    # the mark of where their erased events end (which drops those still on their way).
    from kafka import KafkaConsumer

    from streams.ranking import UserState

    s = worker.settings
    changelog = KafkaConsumer(f"{s.app_id}-user-state-changelog", **s.kafka.kafka_python_config(),
                              auto_offset_reset="earliest", enable_auto_commit=False)

    def forgotten(rs):
        mine = [r for r in rs if r.key == orjson.dumps(user)]
        return bool(mine) and mine[-1].value is not None and orjson.loads(mine[-1].value).get("forgotten_below", -1) > 0

    recs = poll_until(changelog, forgotten, 30)
    last = UserState.from_dict(orjson.loads([r for r in recs if r.key == orjson.dumps(user)][-1].value))
    assert (last.n_events, last.sum_vec, last.history, list(last.seen), list(last.hidden), list(last.recent_event_ids)) \
        == (0, None, [], [], [], [])
    changelog.close()
    consumer.close()


def test_recommend_command_shows_the_current_state_and_list(worker, catalogue):
    import os
    import subprocess
    import sys

    user = f"user-{uuid.uuid4().hex[:6]}"
    consumer = worker.consumer("recommendations")
    events = [{"event_id": f"r{k}-{user}", "user_id": user, "item_id": f"b{k}", "type": "like", "ts": NOW + k}
              for k in range(3)]
    worker.produce("interactions", events)
    got = poll_until(consumer, lambda rs: (r := latest_list(rs, user)) is not None
                     and r.source_event_id == events[-1]["event_id"], 60, worker)
    consumer.close()
    top = latest_list(got, user).items[0].item_id
    out = subprocess.run([sys.executable, "-m", "streams", "recommend", user], env={**os.environ, **worker.env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{user}: 3 events applied" in out.stdout
    assert f"list from event {events[-1]['event_id']}" in out.stdout
    assert f"  1. {top}" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "streams", "recommend", "nobody-at-all"],
                             env={**os.environ, **worker.env}, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no state and no list" in missing.stdout


def _context_ready_line(worker) -> tuple[str | None, str]:
    """The worker's last "worker context ready" log line (None if absent), and the whole log."""
    log_text = worker.log_path.read_text(errors="replace")
    ready = [line for line in log_text.splitlines() if "worker context ready" in line]
    return (ready[-1] if ready else None), log_text


def test_worker_runs_on_the_configured_uvloop(worker, catalogue):
    """AVREC_WORKER__EVENT_LOOP=uvloop (the default) really reaches Faust: its `--loop`
    option alone is read only at `import faust`, long before the worker starts."""
    ready, log_text = _context_ready_line(worker)
    assert ready is not None and "event loop uvloop" in ready, ready or log_text[-2000:]


def test_worker_pins_blas_to_one_thread(worker, catalogue):
    """AVREC_WORKER__BLAS_THREADS=1 (the default) is in effect in the worker process,
    so small matrix products never wait on preempted BLAS helper threads."""
    ready, log_text = _context_ready_line(worker)
    assert ready is not None and "BLAS threads 1," in ready, ready or log_text[-2000:]


def test_worker_shortens_the_gil_switch_interval(worker, catalogue):
    """AVREC_WORKER__GIL_SWITCH_INTERVAL_MS=1 (the default) is in effect in the worker process, so a
    Milvus call's thread gets the GIL back within 1 ms of the loop's ranking (bench/gil_handover.py)."""
    ready, log_text = _context_ready_line(worker)
    assert ready is not None and "GIL switch interval 1.0 ms)" in ready, ready or log_text[-2000:]
