"""``avrec ranker fit`` on a small JSONL log: the file it writes is what a worker loads (no stack needed;
the item texts go through the real text encoder in-process, as in ``avrec eval``)."""

from __future__ import annotations

import random

import orjson
import typer
from typer.testing import CliRunner

from streams.training.cli import register
from streams.ranking.learned import FEATURES, LinearRanker

T0 = 1_700_000_000.0
TOPICS = ("jazz", "cooking", "football")


def _log(path, n_events: int = 400, seed: int = 11) -> None:
    rng = random.Random(seed)
    items = [{"event_id": f"up-{i}", "item_id": f"it{i}", "creator_id": f"c{i % 4}",
              "title": f"{TOPICS[i % 3]} video {i}", "tags": [TOPICS[i % 3]], "created_at": T0}
             for i in range(30)]
    events = []
    for n in range(n_events):
        u = rng.randrange(15)
        pool = [it for it in items if it["tags"][0] == TOPICS[u % 3]]
        events.append({"event_id": f"ev-{n}", "user_id": f"u{u}", "item_id": rng.choice(pool)["item_id"],
                       "type": rng.choice(["like", "view", "complete", "dislike"]), "ts": T0 + 60.0 * (n + 1)})
    path.mkdir(parents=True, exist_ok=True)
    (path / "items.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in items) + b"\n")
    (path / "interactions.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in events) + b"\n")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def test_ranker_fit_writes_a_ranker_the_worker_can_load(tmp_path):
    _log(tmp_path / "log")
    out = tmp_path / "models" / "ranker.json"
    res = CliRunner().invoke(_app(), ["ranker", "fit", str(tmp_path / "log"), "--out", str(out),
                                      "--cache-dir", str(tmp_path / "vec"), "--learn-frac", "0.5"])
    assert res.exit_code == 0, res.output
    assert f"AVREC_RANKING__RANKER_PATH={out}" in res.output
    ranker = LinearRanker.load(out)
    assert ranker.weights.shape == (len(FEATURES),) and (ranker.weights != 0).any()
    # Users stay on one topic, so co-occurrence with what they just watched must matter to the model.
    weights = dict(ranker.describe())
    assert max(w for f, w in weights.items() if "cooc" in f) > 0.1
    # The item regression is fit on every user's watched items and travels in the same file: users
    # watch one topic, so an item's largest weights point to items of its own topic.
    im = ranker.item_model
    assert im is not None and set(im.item_ids) <= {f"it{i}" for i in range(30)} and len(im) > 20
    assert f"item regression: {len(im)} items" in res.output
    topic = {f"it{i}": TOPICS[i % 3] for i in range(30)}
    for h in im.item_ids:
        row = im.weights.getrow(im.index[h])
        best = im.item_ids[row.indices[row.data.argmax()]]
        assert topic[best] == topic[h]


def test_ranker_fit_reports_a_log_it_cannot_learn_from(tmp_path):
    _log(tmp_path / "log", n_events=1)
    res = CliRunner().invoke(_app(), ["ranker", "fit", str(tmp_path / "log"), "--out", str(tmp_path / "r.json"),
                                      "--cache-dir", str(tmp_path / "vec")])
    assert res.exit_code == 1
    assert "avrec ranker fit:" in res.output
    assert not (tmp_path / "r.json").exists()
