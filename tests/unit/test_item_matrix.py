"""The item cache's contiguous vector matrix: rows, reuse after eviction, growth, and ranking from it.

The matrix is a speed path only: every list ranked from it must equal the list ranked from
the same items in a plain dict (one array per item), and no ItemInfo may ever see another
item's vector after its row was reused.
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.ranking import Candidates, ItemInfo, RankingSettings, UserState, ingest_interaction, new_cooccurrence
from streams.ranking import new_trending, recommend
from streams.ranking.candidates import gather_candidates
from streams.ranking.learned import FEATURES, FeatureContext, LinearRanker, learned_scores
from streams.ranking.recommend import ItemRows
from streams.services.items import ItemCache

D = 16
NOW = 1.7e9


def _info(n: int, vec: np.ndarray) -> ItemInfo:
    return ItemInfo(f"i{n}", f"c{n % 7}", f"title {n}", vec, NOW - 3600.0 * (n % 50))


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rows_hold_the_vectors_and_survive_growth():
    vecs = _vectors(3000)
    cache = ItemCache(None, max_items=10_000)
    held = [cache.put(_info(n, vecs[n].copy())) for n in range(3000)]  # grows 1024 -> 2048 -> 4096
    assert cache.rows.matrix.shape[0] >= 3000
    assert sorted(i.row for i in held) == list(range(3000))
    for n, info in enumerate(held):
        np.testing.assert_array_equal(info.vector, vecs[n])  # views re-pointed at the grown matrix
        np.testing.assert_array_equal(cache.rows.matrix[info.row], vecs[n])
    got = cache.vectors_of(["i5", "i2999", "i0"])
    np.testing.assert_array_equal(got, vecs[[5, 2999, 0]])
    assert cache.vectors_of(["i5", "nope"]) is None
    with pytest.raises(ValueError):
        held[0].vector[0] = 1.0  # read-only: a write would change the shared matrix


def test_an_evicted_item_keeps_its_vector_when_its_row_is_reused():
    vecs = _vectors(40, seed=1)
    cache = ItemCache(None, max_items=10)
    first = [cache.put(_info(n, vecs[n].copy())) for n in range(10)]
    later = [cache.put(_info(n, vecs[n].copy())) for n in range(10, 40)]  # evicts i0..i29, reusing rows
    for n, info in enumerate(first):
        assert info.row == -1
        np.testing.assert_array_equal(info.vector, vecs[n])  # its own copy, not the reused row
    # Rows were reused: 30 more items took at most one new row (a put attaches before it evicts).
    assert {i.row for i in later if i.row >= 0} <= set(range(11))
    assert cache.rows.matrix.shape[0] == 1024
    for n, info in zip(range(30, 40), later[-10:]):
        np.testing.assert_array_equal(cache.rows.matrix[info.row], vecs[n])
    assert cache.vectors_of(["i0"]) is None  # evicted: not cached


def test_a_dropped_or_replaced_item_frees_its_row():
    vecs = _vectors(3, seed=2)
    cache = ItemCache(None, max_items=10)
    a = cache.put(_info(0, vecs[0].copy()))
    cache.drop("i0")
    assert a.row == -1
    np.testing.assert_array_equal(a.vector, vecs[0])
    b = cache.put(_info(1, vecs[1].copy()))
    c = cache.put(_info(1, vecs[2].copy()))  # a re-upload with a new vector: a new row, the old one freed
    assert b.row == -1 and c.row >= 0
    np.testing.assert_array_equal(cache.vectors_of(["i1"])[0], vecs[2])


def _world(n_items: int = 600):
    cfg = RankingSettings()
    vecs = _vectors(n_items, seed=3)
    cache = ItemCache(None, max_items=10_000)
    for n in range(n_items):
        cache.put(_info(n, vecs[n].copy()))
    plain = {iid: ItemInfo(info.item_id, info.creator_id, info.title, np.array(info.vector), info.created_at)
             for iid, info in cache._items.items()}
    rows = ItemRows(cache._items)
    rows.matrix = cache.rows.matrix
    co, tr = new_cooccurrence(cfg), new_trending(cfg)
    rng = np.random.default_rng(4)
    users = []
    for u in range(6):
        state = UserState()
        for j, it in enumerate(rng.choice(n_items, 2 + 15 * u, replace=False)):
            iid = f"i{it}"
            ingest_interaction(state, f"u{u}e{j}", iid, plain[iid].vector, "like", None, NOW - 100 + j, cfg, co, tr)
        users.append(state)
    return cfg, vecs, rows, plain, co, tr, users


def test_lists_ranked_from_the_matrix_equal_lists_ranked_from_plain_items():
    cfg, vecs, rows, plain, co, tr, users = _world()
    fresh = [(f"i{n}", plain[f"i{n}"].created_at) for n in range(0, 600, 12)]
    trending = tr.top(50, NOW)
    for state in users + [None]:
        u = state.sum_vec / np.linalg.norm(state.sum_vec) if state is not None else None
        ann = [] if u is None else [(f"i{t}", float(vecs[t] @ u)) for t in np.argsort(-(vecs @ u))[:200]]
        cand = gather_candidates(state, co, cfg, ann, fresh, trending)
        a = recommend(state, cand, rows, NOW, cfg)
        b = recommend(state, cand, plain, NOW, cfg)
        assert a and [(r.item_id, r.score, r.reasons, r.sources) for r in a] == \
            [(r.item_id, r.score, r.reasons, r.sources) for r in b]
        ranker = LinearRanker(np.linspace(-1, 1, len(FEATURES)), np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
        la = learned_scores(ranker, FeatureContext(state, co, tr, rows, NOW), cand)
        lb = learned_scores(ranker, FeatureContext(state, co, tr, plain, NOW), cand)
        assert la == lb


def test_an_item_without_a_row_falls_back_to_its_own_vector():
    cfg, vecs, rows, plain, co, tr, users = _world(300)
    state = users[3]
    rows["i7"] = ItemInfo("i7", "c0", "t", plain["i7"].vector, plain["i7"].created_at)  # row -1
    plain["i7"] = rows["i7"]
    cand = Candidates(ann=[(f"i{n}", 0.0) for n in range(0, 300, 2)])
    a = recommend(state, cand, rows, NOW, cfg)
    b = recommend(state, cand, plain, NOW, cfg)
    assert [(r.item_id, r.score) for r in a] == [(r.item_id, r.score) for r in b]
