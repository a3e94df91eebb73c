"""gather_candidates: the one candidate pool the live worker and the evaluation both rank."""

from __future__ import annotations

from streams.ranking import RankingSettings, UserState, apply_interaction, gather_candidates, new_cooccurrence


def _state(items: list[str]) -> UserState:
    state = UserState()
    cfg = RankingSettings()
    for n, item in enumerate(items):
        apply_interaction(state, f"e{n}", item, None, "like", None, 1000.0 + n, cfg)
    return state


def _cooc(cfg: RankingSettings):
    cooc = new_cooccurrence(cfg)
    # Other users: "a" went with "x", "b" with "y" (twice); "x" is also liked alone, which makes
    # its one pair with "a" weaker evidence (a cosine of 1/sqrt(2) against y's 1).
    cooc.add([], "a")
    cooc.add(["a"], "x")
    cooc.add([], "x")
    for _ in range(2):
        cooc.add([], "b")
        cooc.add(["b"], "y")
    return cooc


def test_every_source_lands_in_the_pool_and_cooc_names_its_history_item():
    cfg = RankingSettings()
    ann, fresh, trending = [("n1", 0.9)], [("f1", 5.0)], [("t1", 3.0)]
    cand = gather_candidates(_state(["a", "b"]), _cooc(cfg), cfg, ann, fresh, trending)
    assert cand.ann == ann and cand.fresh == fresh and cand.trending == trending
    assert {j for j, _ in cand.cooc} == {"x", "y"}
    assert cand.cooc_via == {"x": "a", "y": "b"}


def test_the_settings_weighting_wins_over_the_one_the_store_was_built_with():
    built = RankingSettings(cooc_recency_half_life=0.0)  # every history item weighs the same
    asked = RankingSettings(cooc_recency_half_life=0.25)  # the older item ("b") weighs 1/16
    state, cooc = _state(["b", "a"]), _cooc(built)  # "a" is the most recent
    flat = dict(gather_candidates(state, cooc, built, [], [], []).cooc)
    recent = dict(gather_candidates(state, cooc, asked, [], [], []).cooc)
    assert flat["y"] > flat["x"]  # the stronger pair
    assert recent["x"] > recent["y"]  # but "x" goes with the recent item
    direct = cooc.score_candidates_explained(["b", "a"], asked.cooc_candidates, recency_half_life=0.25)
    assert recent == {j: s for j, s, _ in direct}


def test_a_user_without_history_gets_no_cooccurrence_candidates():
    cfg = RankingSettings()
    for state in (None, UserState()):
        cand = gather_candidates(state, _cooc(cfg), cfg, [], [("f1", 1.0)], [])
        assert cand.cooc == [] and cand.cooc_via == {} and cand.fresh == [("f1", 1.0)]
