"""The learned ranker: its features agree with the co-occurrence scorer, it learns a known signal,
its file round-trips (and a bad one is refused by name), and recommend() ranks by its scores."""

from __future__ import annotations

import importlib
import json
import logging
import random

import numpy as np
import pytest

from streams.ranking import Candidates, ItemInfo, RankingSettings, StateFormatError, UserState, new_cooccurrence
from streams.ranking.learned import (
    COOC_VIEWS,
    FEATURES,
    FeatureContext,
    LinearRanker,
    candidate_features,
    candidate_pool,
    cooc_views,
    learned_scores,
    load_ranker,
    training_example,
)
from streams.ranking.recommend import PoolScores, recommend
from streams.ranking.trending import DecayedCounter

T0 = 1_700_000_000.0


def _store(n_items: int = 40, n_users: int = 60, seed: int = 3):
    """A co-occurrence store filled the way ingest_interaction fills it: random users' item sequences."""
    rng = random.Random(seed)
    cooc = new_cooccurrence(RankingSettings(cooc_max_neighbors=15))  # small rows: pruning is exercised too
    for _ in range(n_users):
        hist: list[str] = []
        for it in rng.sample(range(n_items), rng.randrange(3, min(15, n_items))):
            cooc.add(hist, f"i{it}")
            hist.append(f"i{it}")
    return cooc


def test_cooc_views_equal_the_scorer_for_every_view_and_history():
    cooc = _store()
    liked = [f"i{j}" for j in (3, 7, 7, 11, 2, 19, 23, 5, 31, 8, 13, 17, 29, 1, 4, 6, 9, 10, 12, 14, 15, 16, 18)]
    watched = [*liked[:5], "i33", "i34", *liked[5:], "i35"]
    ids = [f"i{j}" for j in range(45)]  # 40 items in the store, 5 it has never seen
    scores = cooc_views(cooc, (liked, watched), ids)
    assert scores.shape == (len(ids), 2 * len(COOC_VIEWS))
    assert (scores[40:] == 0).all()
    for a, hist in enumerate((liked, watched)):
        for v, (hl, win) in enumerate(COOC_VIEWS):
            want = {j: x for j, x in cooc.score_candidates(hist, 10_000, recency_half_life=hl, score_window=win)
                    if j not in hist}
            got = {j: scores[k, a * len(COOC_VIEWS) + v] for k, j in enumerate(ids) if j not in hist}
            got = {j: s for j, s in got.items() if s > 0}
            assert len(got) >= 3
            assert got.keys() == want.keys(), (a, hl, win)
            for j, s in want.items():
                assert got[j] == pytest.approx(s, rel=1e-12), (a, hl, win, j)


def _examples(rng: np.random.Generator, n: int, signal: int, size: int = 30):
    out = []
    for _ in range(n):
        x = rng.normal(size=(size, len(FEATURES)))
        chosen = int(np.argmax(2.0 * x[:, signal] + 0.5 * rng.normal(size=size)))
        out.append((x, chosen))
    return out


def test_fit_learns_which_feature_decides_and_ranks_by_it():
    rng = np.random.default_rng(0)
    signal = FEATURES.index("log_popularity")
    model = LinearRanker.fit(_examples(rng, 400, signal))
    weights = dict(model.describe())
    assert model.describe()[0][0] == "log_popularity" and weights["log_popularity"] > 0
    assert all(abs(w) < 0.5 * weights["log_popularity"] for f, w in weights.items() if f != "log_popularity")
    test = _examples(rng, 200, signal)
    top1 = np.mean([int(np.argmax(model.score(x))) == p for x, p in test])
    assert top1 > 0.6  # chance is 1/30


def test_fit_refuses_examples_it_cannot_learn_from():
    from streams.ranking import RankingError

    with pytest.raises(RankingError, match="no usable examples"):
        LinearRanker.fit([(np.zeros((1, len(FEATURES))), 0), (np.zeros((5, len(FEATURES))), 7)])


def test_ranker_file_round_trips_and_bad_files_name_themselves(tmp_path):
    rng = np.random.default_rng(1)
    model = LinearRanker.fit(_examples(rng, 50, 0))
    path = tmp_path / "models" / "ranker.json"
    model.save(path)
    again = LinearRanker.load(path)
    x = rng.normal(size=(7, len(FEATURES)))
    assert np.array_equal(again.score(x), model.score(x))
    assert not list(path.parent.glob("*.tmp"))

    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    other = model.to_dict() | {"features": list(FEATURES[:-1])}
    (tmp_path / "old.json").write_text(json.dumps(other))
    flat = model.to_dict() | {"scale": [0.0] * len(FEATURES)}
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    for name, msg in (("missing.json", "cannot read"), ("garbage.json", "not JSON"), ("list.json", "holds a list"),
                      ("old.json", "features differ"), ("flat.json", "scales > 0")):
        with pytest.raises(StateFormatError, match=msg) as err:
            LinearRanker.load(tmp_path / name)
        assert name in str(err.value)


def test_a_version_2_file_loads_and_scores_as_it_did(tmp_path):
    """Version 3 added the last feature (content_cos_x_cold): a version-2 ranker gets weight 0 for
    it, so a deployment's fitted ranker keeps ranking exactly as before until it is refit."""
    rng = np.random.default_rng(4)
    d2 = len(FEATURES) - 1
    w, mean, scale = rng.normal(size=d2), rng.normal(size=d2), rng.uniform(0.5, 2.0, size=d2)
    v2 = {"v": 2, "features": list(FEATURES[:-1]), "weights": w.tolist(), "mean": mean.tolist(),
          "scale": scale.tolist(), "item_model": None}
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    model = LinearRanker.load(tmp_path / "v2.json")
    x = rng.normal(size=(9, len(FEATURES)))
    assert np.allclose(model.score(x), ((x[:, :-1] - mean) / scale) @ w)
    assert FEATURES[-1] == "content_cos_x_cold" and model.weights[-1] == 0.0
    assert model.to_dict()["v"] == 3


def test_load_ranker_follows_the_settings(tmp_path, caplog):
    assert load_ranker(RankingSettings(fusion="weighted", ranker_path=str(tmp_path / "x.json"))) is None
    with caplog.at_level(logging.WARNING, logger="streams.ranking.learned"):
        assert load_ranker(RankingSettings(fusion="learned")) is None
    assert "avrec ranker fit" in caplog.text
    with pytest.raises(StateFormatError, match="nope.json"):
        load_ranker(RankingSettings(fusion="learned", ranker_path=str(tmp_path / "nope.json")))
    rng = np.random.default_rng(2)
    LinearRanker.fit(_examples(rng, 30, 3)).save(tmp_path / "ok.json")
    assert isinstance(load_ranker(RankingSettings(ranker_path=str(tmp_path / "ok.json"))), LinearRanker)


def _items(n: int = 8) -> dict[str, ItemInfo]:
    rng = np.random.default_rng(5)
    out = {}
    for j in range(n):
        v = rng.normal(size=8).astype(np.float32)
        out[f"i{j}"] = ItemInfo(f"i{j}", f"c{j}", f"Title {j}", v / np.linalg.norm(v), T0 - 3600.0 * j)
    return out


def test_candidate_pool_and_training_examples_use_only_listable_items():
    items = _items()
    items["i6"].available = False
    state = UserState()
    state.seen.update({"i1": None})
    state.hidden.update({"i2": None})
    cand = Candidates(ann=[("i0", 0.9), ("i1", 0.8), ("nope", 0.7)], cooc=[("i2", 1.0), ("i3", 0.5)],
                      fresh=[("i4", T0)], trending=[("i5", 3.0), ("i6", 2.0)])
    assert candidate_pool(state, cand, items) == ["i0", "i3", "i4", "i5"]
    assert candidate_pool(state, cand, items, taken_down={"i4"}) == ["i0", "i3", "i5"]
    ctx = FeatureContext(state, new_cooccurrence(RankingSettings()), DecayedCounter(3600.0), items, T0)
    x, row = training_example(ctx, cand, "i4")
    assert x.shape == (4, len(FEATURES)) and row == 2
    assert training_example(ctx, cand, "i7") is None  # not a candidate: nothing to learn about ranking it
    # Age since upload (hours) and trending enter as logs, row by row.
    feats = candidate_features(ctx, ["i0", "i3"])
    assert feats[:, FEATURES.index("log_age_h")] == pytest.approx(np.log1p([0.0, 3.0]))


def test_recommend_ranks_by_the_learned_scores_only_when_fusion_is_learned():
    items = _items()
    cand = Candidates(ann=[(i, 0.5) for i in items], cooc=[("i7", 1.0), ("i6", 0.9)])
    learned = {f"i{j}": float(j % 3) - 0.1 * j for j in range(7)}  # i7 unscored: ranks last
    want = sorted(learned, key=lambda i: -learned[i]) + ["i7"]
    cfg = RankingSettings(fusion="learned", mmr_lambda=1.0, creator_cap=0, top_k=8)
    got = [r.item_id for r in recommend(UserState(), cand, items, T0, cfg, learned=learned)]
    assert got == want
    # Scores are probabilities relative to the best candidate's.
    top = recommend(UserState(), cand, items, T0, cfg, learned=learned)[0]
    assert top.score == pytest.approx(1.0)
    # No ranker (learned=None), or another fusion: the weighted blend, where co-occurrence leads.
    for c, sc in ((cfg, None), (cfg.model_copy(update={"fusion": "weighted"}), learned)):
        blend = [r.item_id for r in recommend(UserState(), cand, items, T0, c, learned=sc)]
        assert blend[:2] == ["i7", "i6"] and blend != want


def test_learned_scores_cover_the_pool_and_follow_the_model():
    items = _items()
    cooc = _store(n_items=8, n_users=30)
    state = UserState()
    for j in (0, 1):
        state.seen[f"i{j}"] = None
    trending = DecayedCounter(3600.0)
    trending.update("i5", T0, 4.0)
    ctx = FeatureContext(state, cooc, trending, items, T0)
    cand = Candidates(ann=[(i, 0.1) for i in items])
    # A model that only likes trending items: i5 first.
    w = np.zeros(len(FEATURES))
    w[FEATURES.index("log_trending")] = 1.0
    model = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    scores = learned_scores(model, ctx, cand)
    assert sorted(scores) == [f"i{j}" for j in range(2, 8)]
    assert max(scores, key=scores.get) == "i5"
    assert scores["i5"] == pytest.approx(np.log1p(4.0))


def test_a_worker_told_to_use_an_unreadable_ranker_refuses_to_start(tmp_path):
    """Before it joins the consumer group (no services needed): exit 1, naming the file and the fix."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "ranker.json"
    bad.write_text('{"v": 1}')
    avrec = Path(sys.executable).with_name("avrec")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVREC_")}
    env |= {"AVREC_RANKING__RANKER_PATH": str(bad), "AVREC_STACK__STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run([str(avrec), "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert str(bad) in res.stderr and "avrec ranker fit" in res.stderr


def test_published_lists_name_the_ranker_that_made_them():
    from streams.ranking.learned import published_model_version

    rng = np.random.default_rng(4)
    a = LinearRanker.fit(_examples(rng, 40, 2))
    same = LinearRanker.from_dict(a.to_dict())
    b = LinearRanker(a.weights * 2.0, a.mean, a.scale)
    assert published_model_version("hybrid-v1", None) == "hybrid-v1"
    va = published_model_version("hybrid-v1", a)
    assert va == published_model_version("hybrid-v1", same)
    assert va.startswith("hybrid-v1+ranker-") and len(va) == len("hybrid-v1+ranker-") + 12
    assert va != published_model_version("hybrid-v1", b)


def test_recommend_reuses_the_pool_learned_scores_filtered_and_lists_the_same(monkeypatch):
    """recommend() given learned_scores' answer for the same user, candidates, items and takedowns
    filters its candidate lists by that pool (no second eligible_ids pass) and lists exactly what it
    lists from the same scores as a plain dict, also when it truncates a source the pool did not."""
    rec = importlib.import_module("streams.ranking.recommend")  # the module, not the function of that name

    items = _items()
    items["i6"].available = False
    cooc = _store(n_items=8, n_users=30)
    state = UserState()
    state.seen.update({"i1": None})
    state.hidden.update({"i2": None})
    taken_down = frozenset({"i3"})
    ctx = FeatureContext(state, cooc, DecayedCounter(3600.0), items, T0)
    # 8 ANN hits, of which recommend keeps the 3 best (ann_candidates: i0, i1 seen, i2 hidden); the
    # pool holds every eligible one.
    cand = Candidates(ann=[(f"i{j}", 1.0 - 0.1 * j) for j in range(8)], cooc=[("i0", 1.0), ("i4", 0.5)])
    cfg = RankingSettings(fusion="learned", ann_candidates=3, top_k=8, explore_slots=0)
    w = np.zeros(len(FEATURES))
    w[FEATURES.index("content_cos")] = 1.0
    ranker = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    scores = learned_scores(ranker, ctx, cand, taken_down)
    assert isinstance(scores, PoolScores) and list(scores) == ["i0", "i4", "i5", "i7"]  # the pool, in order

    calls = []
    real = rec.eligible_ids
    monkeypatch.setattr(rec, "eligible_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    reused = recommend(state, cand, items, T0, cfg, taken_down=taken_down, learned=scores)
    assert calls == []
    plain = recommend(state, cand, items, T0, cfg, taken_down=taken_down, learned=dict(scores))
    assert calls == [1]
    assert [(r.item_id, r.score, r.reasons, r.sources) for r in reused] == \
           [(r.item_id, r.score, r.reasons, r.sources) for r in plain]
    assert sorted(r.item_id for r in reused) == ["i0", "i4"]  # the truncated lists' eligible ids only
    # Scores computed for other objects (here: other takedowns) are not trusted for the pool.
    recommend(state, cand, items, T0, cfg, taken_down={"i3"}, learned=scores)
    assert calls == [1, 1]
    assert scores.pool_of({"i0", "i5"}, state, cand, items, taken_down) == ["i0", "i5"]
    assert scores.pool_of({"i0"}, UserState(), cand, items, taken_down) is None
