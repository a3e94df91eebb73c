"""recommend(): filtering, blending, MMR diversity, creator cap, reasons, determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streams.ranking import (
    Candidates,
    ItemInfo,
    RankingSettings,
    UserState,
    apply_interaction,
    explain_sources,
    recommend,
)
from tests import topic_vectors
from tests.topic_vectors import NO_POLICIES, unit

D = 16
T0 = 1_700_000_000.0
NOW = T0 + 3600.0


def around(axis: int, seed: int, spread: float = 0.15) -> np.ndarray:
    return topic_vectors.around(axis, seed, spread, D)


def item(iid, vec, creator=None, title=None, created_at=T0 - 30 * 86400, available=True) -> ItemInfo:
    return ItemInfo(iid, creator if creator is not None else f"creator-{iid}", title or f"Title {iid}",
                    vec, created_at, available)


@pytest.fixture
def cfg() -> RankingSettings:
    # The hand-computed cases below use an ann-led blend (the earlier defaults) so every
    # source's contribution is visible; the live defaults are checked in test_ranking.py. The
    # evidence and cold-start policies, which reshape these numbers on purpose, are off here:
    # tests/unit/test_cold_start.py checks them.
    return RankingSettings(source_weights={"ann": 1.0, "cooc": 0.6, "fresh": 0.3, "trending": 0.3},
                           **NO_POLICIES)


@pytest.fixture
def world():
    """Topic A around axis 0, topic B around axis 1; a user who liked three topic-A items."""
    items = {}
    for i in range(8):
        items[f"a{i}"] = item(f"a{i}", around(0, i))
        items[f"b{i}"] = item(f"b{i}", around(1, 100 + i))
    return items


def user_who_likes(items, ids, cfg, etypes=None) -> UserState:
    s = UserState()
    for n, iid in enumerate(ids):
        et = etypes[n] if etypes else "like"
        apply_interaction(s, f"ev{n}", iid, items[iid].vector, et, None, T0 + n, cfg)
    return s


def ann_for(state_vec, items, ids):
    return [(i, float(items[i].vector @ state_vec)) for i in ids]


def test_topic_a_fan_gets_topic_a_first(world, cfg):
    s = user_who_likes(world, ["a0", "a1", "a2"], cfg)
    u = s.sum_vec / np.linalg.norm(s.sum_vec)
    cand = Candidates(ann=ann_for(u, world, sorted(world)))
    recs = recommend(s, cand, world, NOW, cfg, k=10)
    ids = [r.item_id for r in recs]
    assert all(i.startswith("a") for i in ids[:5])
    assert {"a0", "a1", "a2"}.isdisjoint(ids)  # seen
    first_b = next(n for n, i in enumerate(ids) if i.startswith("b"))
    last_a = max(n for n, i in enumerate(ids) if i.startswith("a"))
    assert last_a < first_b
    assert all(r.score == pytest.approx(sum(r.sources.values())) for r in recs)


def test_filters_seen_hidden_taken_down_unavailable_and_unknown(world, cfg):
    s = user_who_likes(world, ["a0"], cfg)
    apply_interaction(s, "h", "a1", world["a1"].vector, "hide", None, T0 + 5, cfg)
    apply_interaction(s, "k", "a2", world["a2"].vector, "skip", None, T0 + 6, cfg)
    world["a3"].available = False
    ids = sorted(world) + ["ghost"]
    cand = Candidates(ann=[(i, 0.5) for i in ids], trending=[(i, 1.0) for i in ids], fresh=[(i, T0) for i in ids])
    recs = recommend(s, cand, world, NOW, cfg, taken_down={"a4"}, k=100)
    got = {r.item_id for r in recs}
    assert got.isdisjoint({"a0", "a1", "a2", "a3", "a4", "ghost"})
    assert got == set(world) - {"a0", "a1", "a2", "a3", "a4"}
    assert set(explain_sources(s, cand, world, NOW, cfg, taken_down={"a4"})) == got


def test_creator_cap_is_respected(world, cfg):
    for n, iid in enumerate(sorted(world)):
        world[iid].creator_id = "big" if iid.startswith("a") else f"c{n % 3}"
    s = user_who_likes(world, ["a0"], cfg)
    recs = recommend(s, Candidates(ann=[(i, 0.0) for i in world]), world, NOW, cfg, k=8)
    per = {}
    for r in recs:
        per[world[r.item_id].creator_id] = per.get(world[r.item_id].creator_id, 0) + 1
    # Eight slots, four creators: the cap holds ("big", whose items the user likes most, gets 2).
    assert len(recs) == 8 and per["big"] == 2 and max(per.values()) <= 2
    capless = recommend(s, Candidates(ann=[(i, 0.0) for i in world]), world, NOW,
                        cfg.model_copy(update={"creator_cap": 0}), k=8)
    assert sum(world[r.item_id].creator_id == "big" for r in capless) > 2


def test_creator_cap_yields_rather_than_shorten_the_list(world, cfg):
    """One creator owning the catalogue (MovieLens replays) still gets full lists, cap items first."""
    for n, iid in enumerate(sorted(world)):
        world[iid].creator_id = "studio" if n % 5 else f"indie{n}"
    s = user_who_likes(world, ["a0"], cfg)
    recs = recommend(s, Candidates(ann=[(i, 0.0) for i in world]), world, NOW, cfg, k=10)
    eligible = len(world) - 1  # a0 was liked, so it is filtered
    assert len(recs) == min(10, eligible)
    creators = [world[r.item_id].creator_id for r in recs]
    indies = sum(c != "studio" for c in creators)
    # While the cap holds, every indie item comes before the third studio item.
    third_studio = [k for k, c in enumerate(creators) if c == "studio"][2]
    assert sum(c != "studio" for c in creators[:third_studio]) == indies


def test_mmr_spreads_near_duplicates(cfg):
    base = unit([1.0] + [0.0] * (D - 1))
    items = {f"dup{i}": item(f"dup{i}", unit(base + 0.01 * np.eye(D, dtype=np.float32)[2 + i])) for i in range(5)}
    items["other"] = item("other", unit([0.6, 0.8] + [0.0] * (D - 2)))
    items["liked"] = item("liked", base)
    s = user_who_likes(items, ["liked"], cfg)
    cand = Candidates(ann=[(i, 0.0) for i in items])
    no_div = recommend(s, cand, items, NOW, cfg.model_copy(update={"mmr_lambda": 1.0, "creator_cap": 0}), k=3)
    assert all(r.item_id.startswith("dup") for r in no_div)  # pure relevance: all near-duplicates
    div = recommend(s, cand, items, NOW, cfg.model_copy(update={"mmr_lambda": 0.5, "creator_cap": 0}), k=3)
    assert div[0].item_id.startswith("dup") and div[1].item_id == "other"


def test_cold_start_gets_trending_and_fresh_with_reasons(world, cfg):
    world["b5"].created_at = NOW - 3600  # uploaded an hour ago
    world["b5"].creator_id = "studio-9"
    cand = Candidates(trending=[("a1", 50.0), ("b2", 20.0), ("a3", 5.0)], fresh=[("b5", NOW - 3600)])
    for state in (None, UserState()):
        recs = recommend(state, cand, world, NOW, cfg)
        assert {r.item_id for r in recs} == {"a1", "b2", "a3", "b5"}
        reasons = {r.item_id: r.reasons for r in recs}
        assert reasons["a1"] == ["trending now"]
        assert reasons["b5"] == ["new from studio-9"]
        assert recs[0].item_id == "a1"
        assert all(r.sources["ann"] == 0 and r.sources["cooc"] == 0 for r in recs)


def test_reasons_name_the_closest_history_item_and_how_it_was_used(world, cfg):
    long_title = "An extremely long documentary title about jazz drumming in nineteen-fifties New York"
    world["a0"].title = long_title
    world["b0"].title = "Bossa nova basics"
    s = user_who_likes(world, ["a0", "b0"], cfg, etypes=["complete", "share"])
    u = s.sum_vec / np.linalg.norm(s.sum_vec)
    world["b7"].created_at = NOW - 600
    cand = Candidates(
        ann=ann_for(u, world, sorted(world)),
        cooc=[("b3", 0.9)], cooc_via={"b3": "b0"},
        trending=[("a5", 10.0)], fresh=[("b7", NOW - 600)],
    )
    recs = recommend(s, cand, world, NOW, cfg, k=16)
    by = {r.item_id: r.reasons for r in recs}
    assert all(len(r.reasons) >= 1 for r in recs)
    short = long_title[:59].rstrip() + "…"
    assert len(short) <= 60 and len(long_title) > 60
    assert by["a1"][0] == f'similar to "{short}" you finished'
    assert by["b1"][0] == 'similar to "Bossa nova basics" you shared'
    assert 'viewers of "Bossa nova basics" also watched this' in by["b3"]
    assert "new from creator-b7" in by["b7"]
    assert all(len(x) < 120 for r in recs for x in r.reasons)


def test_every_item_has_reasons_and_output_is_deterministic(cfg):
    rng = np.random.default_rng(7)
    items = {f"i{n:03d}": item(f"i{n:03d}", unit(rng.normal(size=D)), creator=f"c{n % 40}",
                               created_at=NOW - rng.uniform(0, 4 * 86400)) for n in range(300)}
    s = UserState()
    for n in range(10):
        iid = f"i{n:03d}"
        apply_interaction(s, f"e{n}", iid, items[iid].vector, ["like", "view", "complete"][n % 3], 0.8, T0 + n, cfg)
    u = s.sum_vec / np.linalg.norm(s.sum_vec)
    ids = sorted(items)
    cand = Candidates(
        ann=ann_for(u, items, ids[:200]),
        cooc=[(i, float(rng.uniform())) for i in ids[150:250]],
        fresh=[(i, items[i].created_at) for i in ids if NOW - items[i].created_at < 2 * 86400][:50],
        trending=[(i, float(rng.pareto(1.5))) for i in ids[250:300]],
    )
    a = recommend(s, cand, items, NOW, cfg)
    assert len(a) == cfg.top_k and all(r.reasons for r in a)
    assert len({r.item_id for r in a}) == len(a)
    rnd = random.Random(1)
    shuffled = Candidates(*(rnd.sample(lst, len(lst)) for lst in (cand.ann, cand.cooc, cand.fresh, cand.trending)))
    b = recommend(s, shuffled, items, NOW, cfg)
    assert [(r.item_id, r.score, r.reasons) for r in a] == [(r.item_id, r.score, r.reasons) for r in b]
    assert recommend(s, cand, items, NOW, cfg, k=5) == a[:5]
    assert recommend(s, cand, items, NOW, cfg, k=0) == []
    assert recommend(s, Candidates(), items, NOW, cfg) == []


def test_source_normalisation(world, cfg):
    world["b0"].created_at = NOW  # brand new: fresh 1
    world["b1"].created_at = NOW - cfg.fresh_window_s / 2  # half-way: 0.5
    world["b2"].created_at = NOW - 2 * cfg.fresh_window_s  # outside the window: 0
    cand = Candidates(
        cooc=[("a0", 2.0), ("a1", 1.0)],
        trending=[("a2", 100.0), ("a3", 10.0), ("a4", 1.0), ("a5", 0.1)],
        fresh=[("b0", NOW), ("b1", 0.0), ("b2", 0.0)],
    )
    ex = explain_sources(None, cand, world, NOW, cfg)
    assert ex["a0"]["cooc"] == pytest.approx(0.6) and ex["a1"]["cooc"] == pytest.approx(0.3)
    assert [ex[i]["trending"] for i in ("a2", "a3", "a4", "a5")] == pytest.approx([0.3, 0.225, 0.15, 0.075])
    assert [ex[i]["fresh"] for i in ("b0", "b1", "b2")] == pytest.approx([0.3, 0.15, 0.0])
    assert all(v["ann"] == 0 for v in ex.values())
    # A warm user: the ANN term is (cos + 1) / 2 for every candidate, listed by the ANN search or not.
    s = user_who_likes(world, ["a7"], cfg)
    ex = explain_sources(s, cand, world, NOW, cfg)
    u = world["a7"].vector
    assert ex["b0"]["ann"] == pytest.approx((float(world["b0"].vector @ u) + 1) / 2, rel=1e-5)
    assert all(v["total"] == pytest.approx(v["ann"] + v["cooc"] + v["fresh"] + v["trending"]) for v in ex.values())


def test_inputs_are_not_mutated_and_bad_vectors_do_not_poison_the_list(world, cfg):
    world["a5"].vector = world["a5"].vector * 3.0  # not unit: must be normalised on a copy
    before = world["a5"].vector.copy()
    world["b6"].vector = np.full(D, np.nan, dtype=np.float32)
    s = user_who_likes(world, ["a0"], cfg)
    state_before = s.to_dict()
    cand = Candidates(ann=[(i, 0.0) for i in world], trending=[("b6", float("nan")), ("b5", 1.0)])
    recs = recommend(s, cand, world, NOW, cfg, k=16)
    np.testing.assert_array_equal(world["a5"].vector, before)
    assert s.to_dict() == state_before
    assert all(np.isfinite(r.score) for r in recs)
    assert recs[0].item_id.startswith("a")
    assert [r.item_id for r in recommend(s, cand, world, NOW, cfg, k=16)] == [r.item_id for r in recs]


def test_ann_similarities_are_used_without_a_taste_vector(world, cfg):
    cand = Candidates(ann=[("b1", 0.9), ("a1", -0.5)], trending=[("a2", 1.0)])
    recs = recommend(None, cand, world, NOW, cfg)
    assert [r.item_id for r in recs] == ["b1", "a2", "a1"]  # 0.95, 0.3 (trending), 0.25
    ex = explain_sources(None, cand, world, NOW, cfg)
    assert ex["b1"]["ann"] == pytest.approx(0.95) and ex["a1"]["ann"] == pytest.approx(0.25)
    assert ex["a2"]["ann"] == 0.0
    assert recs[0].reasons == ["matches your recent taste"]


# -- reciprocal-rank fusion ---------------------------------------------------------------------
def test_rrf_fuses_ranks_not_scores():
    """Hand-computed: k0 = 1, so a source's ranks 0, 1, 2 give 1, 2/3, 1/2, and 0 where it has no signal."""
    items = {i: item(i, None, created_at=T0 - 30 * 86400) for i in ("p", "q", "r", "s")}
    cfg = RankingSettings(fusion="rrf", rrf_k=1.0, mmr_lambda=1.0, creator_cap=0, **NO_POLICIES,
                          source_weights={"ann": 0.0, "cooc": 1.0, "fresh": 0.0, "trending": 0.5})
    # Co-occurrence scores with a huge spread (p dwarfs the rest): only their order counts.
    cand = Candidates(cooc=[("p", 100.0), ("q", 0.02), ("r", 0.01)], trending=[("r", 9.0), ("s", 3.0), ("q", 1.0)])
    got = explain_sources(None, cand, items, NOW, cfg)
    assert got["p"]["cooc"] == pytest.approx(1.0) and got["p"]["trending"] == 0.0
    assert got["q"]["cooc"] == pytest.approx(2 / 3) and got["q"]["trending"] == pytest.approx(0.5 * 1 / 2)
    assert got["r"]["cooc"] == pytest.approx(1 / 2) and got["r"]["trending"] == pytest.approx(0.5 * 1.0)
    assert got["s"]["cooc"] == 0.0 and got["s"]["trending"] == pytest.approx(0.5 * 2 / 3)
    # totals: p 1, r 1, q 11/12, s 1/3; ties by id
    assert [r.item_id for r in recommend(None, cand, items, NOW, cfg, k=4)] == ["p", "r", "q", "s"]
    # With weighted fusion q (0.02 / 100 of p's co-occurrence) is nearly worthless instead.
    wcfg = cfg.model_copy(update={"fusion": "weighted"})
    assert explain_sources(None, cand, items, NOW, wcfg)["q"]["cooc"] == pytest.approx(0.0002)


def test_rrf_ann_ranks_every_candidate_by_similarity_to_the_taste_vector(world):
    cfg = RankingSettings(fusion="rrf", rrf_k=0.0, mmr_lambda=1.0, creator_cap=0, **NO_POLICIES,
                          source_weights={"ann": 1.0, "cooc": 0.0, "fresh": 0.0, "trending": 0.0})
    s = user_who_likes(world, ["a0"], cfg)
    cand = Candidates(trending=[("b1", 1.0), ("a1", 0.5), ("b2", 0.2)])
    got = explain_sources(s, cand, world, NOW, cfg)
    # k0 = 0: ranks 0, 1, 2 -> 1, 1/2, 1/3; a1 (topic A, like the user's a0) ranks first.
    assert got["a1"]["ann"] == pytest.approx(1.0)
    assert sorted(v["ann"] for v in got.values()) == pytest.approx([1 / 3, 1 / 2, 1.0])
    assert recommend(s, cand, world, NOW, cfg, k=1)[0].item_id == "a1"


def test_rrf_rejects_unknown_fusion_names():
    with pytest.raises(ValueError):
        RankingSettings(fusion="sum")
