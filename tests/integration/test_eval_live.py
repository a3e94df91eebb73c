"""``avrec eval --live``: a small log through Kafka and a real worker, compared with the offline lists.

Needs the real stack (Kafka, Triton, Milvus Lite); the worker is a subprocess on
its own topics and collections. The synthetic test needs no shared data; the
MovieLens one replays a small slice of ml-100k.
"""

from __future__ import annotations

import random

import orjson
import pytest
from typer.testing import CliRunner

T0 = 1_700_000_000.0
GENRES = ("jazz", "cooking", "football", "physics")


def _app():
    import typer

    from streams.evaluation.cli import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is invoked as "eval", as under avrec
    register(app)
    return app


def _synthetic(path, n_users: int = 12, n_events: int = 300, seed: int = 7) -> None:
    """40 items in 4 topics (10 of them uploaded mid-way), users who mostly stay on one or two topics."""
    rng = random.Random(seed)
    items = []
    for i in range(40):
        g = GENRES[i % 4]
        late = i >= 30
        items.append({
            "event_id": f"up-{i}", "item_id": f"it{i}", "creator_id": f"c{i % 3}",
            "title": f"{g} video number {i}", "tags": [g], "description": f"all about {g}",
            "created_at": T0 + (3000.0 if late else 0.0),
        })
    events = []
    ts = T0 + 10.0
    for n in range(n_events):
        u = rng.randrange(n_users)
        likes = (GENRES[u % 4], GENRES[(u + 1) % 4])
        pool = [it for it in items if it["tags"][0] in likes and (it["created_at"] <= ts)]
        it = rng.choice(pool)
        events.append({"event_id": f"ev-{n}", "user_id": f"u{u}", "item_id": it["item_id"],
                       "type": rng.choice(["like", "like", "view", "complete", "skip"]), "ts": ts})
        ts += 20.0
    path.mkdir(parents=True, exist_ok=True)
    (path / "items.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in items) + b"\n")
    (path / "interactions.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in events) + b"\n")


def _check(doc: dict, out) -> None:
    lv, a = doc["live"], doc["agreement"]
    # The live settings rank with a learned ranker: fit on the training events, loaded by the worker
    # from the file named here, and the same model in the offline replay (else the lists below differ).
    hybrid = doc["settings"]["hybrid"]
    assert hybrid["fusion"] == "learned" and hybrid["ranker_path"], hybrid
    assert doc["settings"]["worker_env"]["AVREC_RANKING__RANKER_PATH"] == hybrid["ranker_path"]
    from streams.ranking.learned import LinearRanker

    # Every list the worker published names that ranker.
    assert lv["model_versions"] == [f"hybrid-v1+ranker-{LinearRanker.load(hybrid['ranker_path']).fingerprint()}"]
    assert lv["unresolved_events"] == 0
    assert lv["lists"] >= lv["interactions"]  # lock-step: every interaction gets its own list
    assert lv["batches"]["superseded"] == 0
    assert lv["unknown_items_in_lists"] == 0
    # Lock-step live lists are the offline one-event-batch lists, up to float ties (Triton vs in-process).
    assert a["live_vs_hybrid_as_live"]["identical"] >= 0.9, a
    assert abs(doc["hr_difference"]["live_minus_hybrid_as_live"]) <= 0.02
    if a["live_vs_hybrid_after_first"]["n"]:
        assert a["live_vs_hybrid_after_first"]["overlap"] >= 0.8, a
    assert lv["latency_received"]["n"] >= lv["interactions"]
    for f in ("report.md", "summary.json", "latency.png", "metrics.png"):
        assert (out / f).stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "## Agreement" in text and "latency.png" in text


def test_live_eval_with_1_2_and_3_workers_publishes_the_offline_lists(stack, tmp_path, monkeypatch):
    """The same log in lock-step through 1, 2 and 3 workers in one consumer group (same app id per run):
    every list identical across the three runs and to the offline one-event-batch replay. The 2-worker
    run has the per-user ANN candidate cache on for every user (off by default): its hits must not
    change a list either."""
    data = tmp_path / "synthetic"
    _synthetic(data)
    lists = {}
    for n in (1, 2, 3):
        if n == 2:
            monkeypatch.setenv("AVREC_WORKER__ANN_CACHE_USERS", "10000")
            monkeypatch.setenv("AVREC_WORKER__ANN_CACHE_MIN_HISTORY", "0")
        else:
            monkeypatch.delenv("AVREC_WORKER__ANN_CACHE_USERS", raising=False)
            monkeypatch.delenv("AVREC_WORKER__ANN_CACHE_MIN_HISTORY", raising=False)
        out = tmp_path / f"live-{n}"
        res = CliRunner().invoke(_app(), [
            "eval", str(data), "--live", "--workers", str(n), "--out", str(out),
            "--cache-dir", str(tmp_path / "vec"), "--event-timeout", "30",
        ])
        assert res.exit_code == 0, res.output
        doc = orjson.loads((out / "summary.json").read_bytes())
        assert doc["live"]["workers"] == n
        assert doc["dataset"]["replayed_interactions"] == 300
        assert doc["live"]["uploads"] == 40
        assert doc["protocol"]["test_interactions"] == 60
        _check(doc, out)
        # Consistent item state across workers: the lists are the offline ones, whichever worker owns the user.
        assert doc["agreement"]["live_vs_hybrid_as_live"]["identical"] == 1.0, doc["agreement"]
        lists[n] = orjson.loads((out / "lists.json").read_bytes())
        assert len(lists[n]) == 300  # one list per interaction (lock-step)
        # The eval workers' topics (their own and Faust's changelogs) are deleted afterwards.
        from streams.kafka.admin import admin_client
        from streams.settings import Settings

        admin = admin_client(Settings().kafka)
        try:
            left = [t for t in admin.list_topics()
                    if t.startswith((doc["live"]["topic_prefix"], doc["live"]["worker_app_id"] + "-"))]
        finally:
            admin.close()
        assert left == []
    for n in (2, 3):
        differ = [e for e in lists[1] if lists[n].get(e) != lists[1][e]]
        assert not differ, f"{len(differ)} of {len(lists[1])} lists differ between 1 and {n} workers, e.g. {differ[:3]}"


@pytest.mark.shared_data
def test_live_eval_on_a_slice_of_ml100k(stack, shared_data, tmp_path):
    out = tmp_path / "live"
    res = CliRunner().invoke(_app(), [
        "eval", str(shared_data / "ml-100k"), "--live", "--limit", "300", "--out", str(out),
        "--event-timeout", "30",
    ])
    assert res.exit_code == 0, res.output
    doc = orjson.loads((out / "summary.json").read_bytes())
    assert doc["dataset"]["replayed_interactions"] == 300
    assert doc["protocol"]["targets"] == 60
    _check(doc, out)
