"""explain=true: contributions add up to the score they explain, for the learned ranker and the blend."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streams.ranking import (ItemInfo, RankingSettings, UserState, apply_interaction, gather_candidates,
                             new_cooccurrence)
from streams.ranking.explain import explain_items
from streams.ranking.learned import FEATURES, FeatureContext, LinearRanker, candidate_features, learned_scores
from streams.ranking.recommend import recommend
from streams.ranking.trending import DecayedCounter
from tests.explain_checks import listed_score

T0 = 1_700_000_000.0


def _scene(seed: int = 7):
    """40 items, a co-occurrence store from 60 random users, trending counts and one user with a history."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    items = {}
    for j in range(40):
        v = nprng.normal(size=16).astype(np.float32)
        items[f"i{j}"] = ItemInfo(f"i{j}", f"c{j % 7}", f"Title {j}", v / np.linalg.norm(v), T0 - 1800.0 * j)
    cfg = RankingSettings(fusion="learned", top_k=15)
    cooc = new_cooccurrence(cfg)
    trending = DecayedCounter(cfg.trending_half_life_s)
    for _ in range(60):
        hist: list[str] = []
        for it in rng.sample(range(40), rng.randrange(3, 12)):
            cooc.add(hist, f"i{it}")
            trending.update(f"i{it}", T0 - rng.random() * 7200, 1.0)
            hist.append(f"i{it}")
    state = UserState()
    for k, j in enumerate((3, 9, 14, 21)):
        apply_interaction(state, f"e{k}", f"i{j}", items[f"i{j}"].vector, "like", None, T0 - 100 + k, cfg)
    ann = [(i, float(info.vector @ state.sum_vec / np.linalg.norm(state.sum_vec))) for i, info in items.items()]
    cand = gather_candidates(state, cooc, cfg, ann, [(i, items[i].created_at) for i in list(items)[:10]],
                             trending.top(20, T0))
    return cfg, items, cooc, trending, state, cand


def _ranker(seed: int) -> LinearRanker:
    rng = np.random.default_rng(seed)
    d = len(FEATURES)
    return LinearRanker(rng.normal(size=d), rng.normal(size=d), rng.uniform(0.5, 2.0, size=d))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_learned_contributions_add_up_to_the_ranker_score_and_the_score_follows(seed):
    cfg, items, cooc, trending, state, cand = _scene()
    ranker = _ranker(seed)
    ctx = FeatureContext(state, cooc, trending, items, T0)
    learned = learned_scores(ranker, ctx, cand)
    recs = recommend(state, cand, items, T0, cfg, learned=learned)
    assert len(recs) == cfg.top_k
    ex = explain_items(recs, "learned", ranker, ctx, learned)
    top = max(learned.values())
    for r in recs:
        e = ex[r.item_id]
        assert e["adds_up_to"] == "ranker_score" and e["method"] == "learned"
        assert set(e["contributions"]) == set(FEATURES)
        # The ranker score is the one the list was ranked with, and the contributions add up to it.
        assert e["total"] == learned[r.item_id]
        assert abs(sum(e["contributions"].values()) + e["intercept"] - e["total"]) < 1e-6
        assert e["max_ranker_score"] == pytest.approx(top)
        assert r.score == pytest.approx(listed_score(e), rel=1e-9)
        # Each contribution is weight * standardised feature, as the ranker computes it.
        x = candidate_features(ctx, [r.item_id], ranker.item_model)[0]
        f = FEATURES.index("log_trending")
        assert e["contributions"]["log_trending"] == pytest.approx(
            ranker.weights[f] * (x[f] - ranker.mean[f]) / ranker.scale[f])
        assert e["sources"] == r.sources


def test_contributions_follow_the_weights():
    """Doubling one weight doubles that feature's contribution and nothing else's."""
    cfg, items, cooc, trending, state, cand = _scene()
    a = _ranker(4)
    w = a.weights.copy()
    k = FEATURES.index("content_cos")
    w[k] *= 2
    b = LinearRanker(w, a.mean, a.scale)
    x = candidate_features(FeatureContext(state, cooc, trending, items, T0), ["i0", "i1", "i2"])
    ca, cb = a.contributions(x), b.contributions(x)
    assert cb[:, k] == pytest.approx(2 * ca[:, k])
    others = [j for j in range(len(FEATURES)) if j != k]
    assert (cb[:, others] == ca[:, others]).all()
    assert ca.sum(1) == pytest.approx(a.score(x))


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_blend_contributions_are_the_sources_and_add_up_to_the_score(fusion):
    cfg, items, cooc, trending, state, cand = _scene()
    cfg = cfg.model_copy(update={"fusion": fusion})
    recs = recommend(state, cand, items, T0, cfg)
    ex = explain_items(recs, fusion)
    assert any(e["contributions"]["cooc"] > 0 for e in ex.values())
    for r in recs:
        e = ex[r.item_id]
        assert e["adds_up_to"] == "score" and e["method"] == fusion and e["total"] == r.score
        assert set(e["contributions"]) == {"ann", "cooc", "fresh", "trending"}
        assert abs(sum(e["contributions"].values()) + e["intercept"] - r.score) < 1e-6


def test_learned_fusion_without_a_ranker_explains_with_the_blend():
    cfg, items, cooc, trending, state, cand = _scene()
    recs = recommend(state, cand, items, T0, cfg, learned=None)  # no ranker fitted yet
    ex = explain_items(recs, "weighted", None, FeatureContext(state, cooc, trending, items, T0), None)
    assert all(abs(sum(e["contributions"].values()) - r.score) < 1e-6 for r, e in zip(recs, ex.values()))


def test_explain_does_not_change_the_list():
    cfg, items, cooc, trending, state, cand = _scene()
    ranker = _ranker(9)
    ctx = FeatureContext(state, cooc, trending, items, T0)
    learned = learned_scores(ranker, ctx, cand)
    before = [(r.item_id, r.score) for r in recommend(state, cand, items, T0, cfg, learned=learned)]
    explain_items(recommend(state, cand, items, T0, cfg, learned=learned), "learned", ranker, ctx, learned)
    assert before == [(r.item_id, r.score) for r in recommend(state, cand, items, T0, cfg, learned=learned)]
