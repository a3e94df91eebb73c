"""The item regression (EASE): its closed form on hand-computed cases, its sparsification and bounds,
its history views, its file format, and how a ranker carries it into its features."""

from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest

from streams.ranking import Candidates, ItemInfo, RankingSettings, StateFormatError, UserState, new_cooccurrence
from streams.ranking.exceptions import RankingError
from streams.ranking.item_regression import ItemRegression
from streams.ranking.learned import FEATURES, FeatureContext, LinearRanker, candidate_features, fit_item_regression, \
    learned_scores
from streams.ranking.trending import DecayedCounter


def _dense(model: ItemRegression, order: list[str]) -> np.ndarray:
    idx = [model.index[j] for j in order]
    return model.weights.toarray()[np.ix_(idx, idx)]


def test_two_items_always_watched_together():
    # X = [[1, 1], [1, 1]]: G + λI = [[3, 2], [2, 3]] (λ = 1), P = [[3, -2], [-2, 3]] / 5,
    # B = -P / diag(P) off the diagonal: each item predicts the other with weight 2/3.
    model = ItemRegression.fit([["a", "b"], ["b", "a"]], l2=1.0)
    assert _dense(model, ["a", "b"]) == pytest.approx(np.array([[0.0, 2 / 3], [2 / 3, 0.0]]))


def test_weights_run_from_the_history_item_to_the_candidate():
    # a is in three profiles, b in one of them: G + I = [[4, 1], [1, 2]], P = [[2, -1], [-1, 4]] / 7,
    # B[h, j] = -P[h, j] / P[j, j]: having watched b says 1/2 about a, having watched a 1/4 about b.
    model = ItemRegression.fit([["a", "b"], ["a"], ["a"]], l2=1.0)
    assert _dense(model, ["a", "b"]) == pytest.approx(np.array([[0.0, 1 / 4], [1 / 2, 0.0]]))
    assert model.views(["b"], ["a"])[0] == pytest.approx([1 / 2, 1 / 2])


def test_an_item_watched_alone_is_predicted_by_nothing():
    # c is never watched with a or b: G is block diagonal and so is B, with a zero diagonal.
    model = ItemRegression.fit([["a", "b"], ["a", "b"], ["c"]], l2=1.0)
    b = _dense(model, ["a", "b", "c"])
    assert b[0, 1] == pytest.approx(2 / 3)  # the a-b block is the case above
    assert b[:2, 2] == pytest.approx([0.0, 0.0]) and b[2, :2] == pytest.approx([0.0, 0.0])
    assert np.diag(b) == pytest.approx([0.0, 0.0, 0.0])


def test_the_regression_explains_away_redundant_evidence():
    # b and c are always watched together, and d comes with them. Cosine co-occurrence scores d from
    # b and c both; the regression splits the evidence, so each alone says less than one item would.
    alone = ItemRegression.fit([["b", "d"]] * 5 + [["e"]] * 5, l2=1.0)
    pair = ItemRegression.fit([["b", "c", "d"]] * 5 + [["e"]] * 5, l2=1.0)
    # alone: G + I = [[6, 5], [5, 6]] -> B[b, d] = 5/6. pair: G + I = I + 5J (3 x 3), whose inverse is
    # I - (5/16) J -> B[b, d] = (5/16) / (11/16) = 5/11, and the same for c.
    w_alone = _dense(alone, ["b", "d"])[0, 1]
    w_b, w_c = _dense(pair, ["b", "c", "d"])[:2, 2]
    assert (w_alone, w_b, w_c) == pytest.approx((5 / 6, 5 / 11, 5 / 11))
    assert w_b < w_alone < w_b + w_c


def test_each_item_keeps_its_largest_weights_and_the_rest_of_the_catalogue_is_dropped(caplog):
    rng = np.random.default_rng(0)
    profiles = [[f"i{j}" for j in rng.choice(30, size=rng.integers(2, 12), replace=False)] for _ in range(200)]
    full = ItemRegression.fit(profiles, l2=5.0, top_k=1000)
    top = ItemRegression.fit(profiles, l2=5.0, top_k=4)
    assert len(full) == len(top) == 30
    for r in range(30):
        row = full.weights.getrow(r).toarray().ravel()
        kept = top.weights.getrow(r)
        assert kept.nnz == 4
        assert set(kept.indices) == set(np.argsort(-np.abs(row))[:4])
        assert kept.toarray().ravel()[kept.indices] == pytest.approx(row[kept.indices], rel=1e-5)
    counts = {f"i{j}": sum(f"i{j}" in p for p in profiles) for j in range(30)}
    with caplog.at_level(logging.WARNING, logger="streams.ranking.item_regression"):
        small = ItemRegression.fit(profiles, l2=5.0, max_items=10)
    assert set(small.item_ids) == set(sorted(counts, key=lambda j: (-counts[j], j))[:10])
    assert "ITEM_REGRESSION_MAX_ITEMS" in caplog.text


def test_views_weigh_the_history_flat_and_by_recency():
    model = ItemRegression.fit([["a", "b", "x"], ["b", "c", "x"], ["a", "c", "y"], ["x", "y"]], l2=1.0, history=2)
    b = model.weights.toarray()
    col = model.index["x"]
    # History oldest first; the last two distinct items count: c (newest, rank 0), then b (rank 1).
    got = model.views(["a", "b", "c", "b", "c"], ["x", "new"])
    flat = b[model.index["c"], col] + b[model.index["b"], col]
    recency = b[model.index["c"], col] + 0.5 ** (1 / 4) * b[model.index["b"], col]
    assert got[0] == pytest.approx([flat, recency])
    assert got[1] == pytest.approx([0.0, 0.0])  # not modelled: uploaded after the fit
    assert model.views([], ["x"]) == pytest.approx(np.zeros((1, 2)))
    assert model.views(["unknown"], ["x"]) == pytest.approx(np.zeros((1, 2)))


def test_bad_inputs_and_files_are_refused_with_the_reason():
    with pytest.raises(RankingError, match="l2"):
        ItemRegression.fit([["a", "b"]], l2=0.0)
    with pytest.raises(RankingError, match="nothing to fit"):
        ItemRegression.fit([[], []])
    model = ItemRegression.fit([["a", "b"], ["b", "c"]], l2=1.0)
    again = ItemRegression.from_dict(model.to_dict())
    assert again.item_ids == model.item_ids and again.l2 == model.l2 and again.history == model.history
    assert np.array_equal(again.weights.toarray(), model.weights.toarray())
    d = model.to_dict()
    for broken, msg in ((d | {"indptr": "!!"}, "cannot read"), (d | {"items": ["a", "b"]}, "inconsistent"),
                        ({k: v for k, v in d.items() if k != "data"}, "cannot read")):
        with pytest.raises(StateFormatError, match=msg):
            ItemRegression.from_dict(broken)


def _items(n: int) -> dict[str, ItemInfo]:
    v = np.eye(n, dtype=np.float32)
    return {f"i{j}": ItemInfo(f"i{j}", "c", f"t{j}", v[j], 0.0) for j in range(n)}


def test_a_ranker_carries_its_item_regression_into_features_scores_and_file(tmp_path):
    cfg = RankingSettings(item_regression_l2=1.0)
    users = []
    for p in (["i0", "i1"], ["i0", "i1"], ["i1", "i2"], ["i3"]):
        s = UserState()
        s.seen.update(dict.fromkeys(p))
        users.append(s)
    item_model = fit_item_regression(users, cfg)
    me = UserState()
    me.seen.update({"i0": None})
    ctx = FeatureContext(me, new_cooccurrence(cfg), DecayedCounter(3600.0), _items(4), 10.0)
    col = FEATURES.index("ease_watched_all")
    feats = candidate_features(ctx, ["i1", "i2", "i3"], item_model)
    assert feats[:, col] == pytest.approx(item_model.views(["i0"], ["i1", "i2", "i3"])[:, 0])
    assert feats[0, col] > 0 and feats[2, col] == 0  # i1 comes with i0; i3 never does
    assert candidate_features(ctx, ["i1"])[:, col] == pytest.approx([0.0])  # no regression: no signal

    w = np.zeros(len(FEATURES))
    w[col] = 1.0
    ranker = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), item_model=item_model)
    scores = learned_scores(ranker, ctx, Candidates(cooc=[("i1", 0.1), ("i2", 0.1), ("i3", 0.1)]))
    assert max(scores, key=scores.get) == "i1"

    assert ranker.summary().startswith(
        f"item regression: {len(item_model)} items; it leans most on ease_watched_all +1.00")
    ranker.save(tmp_path / "r.json")
    again = LinearRanker.load(tmp_path / "r.json")
    assert again.fingerprint() == ranker.fingerprint()
    assert np.array_equal(again.item_model.weights.toarray(), item_model.weights.toarray())
    bare = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    assert bare.fingerprint() != ranker.fingerprint()  # same weights, another item model: another name
    # A file from before the item regression (version 1, fewer features) is refused with the fix.
    (tmp_path / "old.json").write_bytes(orjson.dumps(ranker.to_dict() | {"v": 1}))
    with pytest.raises(StateFormatError, match="expected 3.*avrec ranker fit"):
        LinearRanker.load(tmp_path / "old.json")
