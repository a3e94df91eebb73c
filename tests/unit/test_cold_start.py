"""Evidence-aware blending and the cold-start policy (RankingSettings' "evidence and cold start").

The scenario of issue 16, at the scoring core: a fresh platform whose whole catalogue was just
uploaded, a user who liked three food videos and another who liked three game videos. Before the
policies, thin trending counts (the other user's likes) and freshness outranked the user's own
content signal.
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.ranking import Candidates, ItemInfo, RankingSettings, UserState, apply_interaction, recommend, user_vector
from streams.ranking.recommend import EXPLORE_REASON, cold_start_share
from tests import topic_vectors
from tests.topic_vectors import unit

D = 16
NOW = 1_700_000_000.0
OFF = topic_vectors.NO_POLICIES


def around(axis: int, seed: int, spread: float = 0.2) -> np.ndarray:
    return topic_vectors.around(axis, seed, spread, D)


@pytest.fixture
def platform() -> dict[str, ItemInfo]:
    """30 food items (around axis 0) and 30 game items (axis 1), all uploaded in the last 10 minutes."""
    items = {}
    for i in range(30):
        for topic, axis in (("food", 0), ("game", 1)):
            iid = f"{topic}{i}"
            items[iid] = ItemInfo(iid, f"{topic}-creator{i % 7}", f"{topic} video {i}", around(axis, 1000 * axis + i),
                                  NOW - 600 + i)
    return items


def liker(items, ids, cfg) -> UserState:
    s = UserState()
    for n, iid in enumerate(ids):
        apply_interaction(s, f"{iid}-ev", iid, items[iid].vector, "like", None, NOW - 60 + n, cfg)
    return s


def candidates_for(state: UserState, items, trending) -> Candidates:
    """What the worker gathers on a fresh platform: ANN by the taste vector, every item fresh, the
    trending counter holding the six likes so far (one event each), no co-occurrence beyond them."""
    u = user_vector(state)
    ann = sorted(((i, float(info.vector @ u)) for i, info in items.items()), key=lambda p: -p[1])[:40]
    fresh = sorted(((i, info.created_at) for i, info in items.items()), key=lambda p: -p[1])[:50]
    # Nobody has interacted with the catalogue yet: every fresh upload is unexplored.
    return Candidates(ann=ann, fresh=fresh, trending=trending, explore=[i for i, _ in fresh])


def test_new_users_lists_are_led_by_what_they_liked(platform):
    cfg = RankingSettings(fusion="weighted")  # a fresh deployment: no ranker fitted yet
    food_likes, game_likes = ["food1", "food2", "food3"], ["game1", "game2", "game3"]
    trending = [(i, 1.0) for i in food_likes + game_likes]
    for likes, topic, other in ((food_likes, "food", game_likes), (game_likes, "game", food_likes)):
        state = liker(platform, likes, cfg)
        top = [r.item_id for r in recommend(state, candidates_for(state, platform, trending), platform, NOW, cfg)]
        assert all(i.startswith(topic) for i in top[:10]), top
        assert not set(other) & set(top[:10]), "the other user's likes ride three events of 'trending'"
        # Without the policies, the failure: the other user's likes are in the top 10.
        before = RankingSettings(fusion="weighted", **OFF)
        top0 = [r.item_id for r in recommend(state, candidates_for(state, platform, trending), platform, NOW, before)]
        assert set(other) & set(top0[:10])


def test_trending_keeps_its_weight_where_the_evidence_is_large(platform):
    cfg = RankingSettings(fusion="weighted", cold_start_events=0, explore_slots=0)
    cand = Candidates(trending=[("game1", 1000.0), ("food1", 3.0)])
    recs = {r.item_id: r for r in recommend(None, cand, platform, NOW, cfg)}
    w = cfg.source_weights.trending
    # Rank-based norms 1 and 1/2, times c / (c + 20).
    assert recs["game1"].sources["trending"] == pytest.approx(w * 1000 / 1020)
    assert recs["food1"].sources["trending"] == pytest.approx(w * 0.5 * 3 / 23)
    assert "trending now" in recs["game1"].reasons


@pytest.mark.parametrize(("n", "share"), [(0, 0.0), (1, 0.7), (3, 0.7 * 3 / 5), (5, 0.7 / 5), (6, 0.0)])
def test_cold_start_share_falls_with_each_event(platform, n, share):
    cfg = RankingSettings()
    state = liker(platform, [f"food{i}" for i in range(n)], cfg) if n else None
    assert cold_start_share(state, cfg) == pytest.approx(share)
    assert cold_start_share(state, cfg.model_copy(update={"cold_start_events": 0})) == 0.0


def test_blend_contributions_still_add_up_to_the_score_when_leaning_on_content(platform):
    cfg = RankingSettings(fusion="weighted")
    state = liker(platform, ["food1", "game2"], cfg)
    trending = [("food7", 40.0), ("game9", 2.0)]
    recs = recommend(state, candidates_for(state, platform, trending), platform, NOW, cfg)
    assert recs
    for r in recs:
        assert sum(r.sources.values()) == pytest.approx(r.score, rel=1e-6)


def test_learned_scores_lean_on_content_for_a_cold_user(platform):
    cfg = RankingSettings(fusion="learned", explore_slots=0)
    state = liker(platform, ["food1"], cfg)
    cand = candidates_for(state, platform, [])
    # A ranker that only knows popularity: it prefers the game items.
    learned = {i: (1.0 if i.startswith("game") else 0.0) for i, _ in cand.ann + cand.fresh}
    top = [r.item_id for r in recommend(state, cand, platform, NOW, cfg, learned=learned)][:5]
    assert all(i.startswith("food") for i in top), top
    off = [r.item_id for r in recommend(state, cand, platform, NOW, cfg.model_copy(update={"cold_start_events": 0}),
                                        learned=learned)][:5]
    assert all(i.startswith("game") for i in off), off


def test_exploration_slot_brings_a_fresh_upload_labelled_as_such(platform):
    cfg = RankingSettings(fusion="weighted", top_k=5)
    old = {i: ItemInfo(i, info.creator_id, info.title, info.vector, NOW - 30 * 86400) for i, info in platform.items()}
    old["game25"] = platform["game25"]  # the one new upload, off the user's taste
    state = liker(old, ["food1", "food2", "food3"], cfg)  # in the cold start
    u = user_vector(state)
    ann = sorted(((i, float(info.vector @ u)) for i, info in old.items()), key=lambda p: -p[1])[:40]
    cand = Candidates(ann=ann, fresh=[("game25", old["game25"].created_at)], explore=["game25"])
    recs = recommend(state, cand, old, NOW, cfg)
    assert len(recs) == 5
    assert recs[-1].item_id == "game25" and recs[-1].reasons == [EXPLORE_REASON]
    assert all(r.reasons != [EXPLORE_REASON] for r in recs[:-1])
    no_slot = recommend(state, cand, old, NOW, cfg.model_copy(update={"explore_slots": 0}))
    assert "game25" not in [r.item_id for r in no_slot]
    assert [r.item_id for r in no_slot][:4] == [r.item_id for r in recs][:4]
    # An established user's list explores nothing.
    settled = liker(old, [f"food{i}" for i in range(1, 8)], cfg)
    assert all(r.reasons != [EXPLORE_REASON] for r in recommend(settled, cand, old, NOW, cfg))


def test_no_exploration_slot_when_the_list_already_has_fresh_items(platform):
    cfg = RankingSettings(fusion="weighted", top_k=5)
    state = liker(platform, ["food1", "food2", "food3", "food4", "food5", "food6"], cfg)
    recs = recommend(state, candidates_for(state, platform, []), platform, NOW, cfg)
    assert recs and all(r.reasons != [EXPLORE_REASON] for r in recs)


def test_only_uploads_few_users_touched_are_explored():
    """gather_candidates marks a fresh upload for exploration until explore_max_users users engaged."""
    from streams.ranking import gather_candidates, new_cooccurrence

    cfg = RankingSettings()
    cooc = new_cooccurrence(cfg)
    for u in range(cfg.explore_max_users):
        cooc.add([f"old{u}"], "popular-new")
    cooc.add(["old0"], "quiet-new")
    fresh = [("popular-new", NOW - 60), ("quiet-new", NOW - 30)]
    cand = gather_candidates(None, cooc, cfg, [], fresh, [])
    assert cand.explore == ["quiet-new"]
    assert gather_candidates(None, cooc, cfg.model_copy(update={"explore_slots": 0}), [], fresh, []).explore == []
