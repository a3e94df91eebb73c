"""Scoring core: settings, the user taste state and the shared ingest path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.exceptions import AvrecError
from streams.ranking import (
    RankingError,
    RankingSettings,
    StateFormatError,
    UserState,
    apply_interaction,
    event_weight,
    history_ids,
    ingest_interaction,
    new_cooccurrence,
    new_trending,
    user_vector,
)

D = 16
H = 7 * 24 * 3600.0
T0 = 1_700_000_000.0


def e(i: int, dim: int = D) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


@pytest.fixture
def cfg() -> RankingSettings:
    return RankingSettings()


def like(state, eid, item, vec, ts, cfg, etype="like", wr=None):
    return apply_interaction(state, eid, item, vec, etype, wr, ts, cfg)


# -- settings ---------------------------------------------------------------------------
def test_defaults_match_the_documented_values(cfg):
    assert cfg.event_weights.model_dump() == {
        "view": 0.3, "like": 1.0, "share": 1.5, "comment": 1.0,
        "complete": 1.2, "skip": -0.3, "dislike": -1.0, "hide": -1.5,
    }
    assert cfg.source_weights.model_dump() == {"ann": 0.2, "cooc": 1.0, "fresh": 0.1, "trending": 0.1}
    assert (cfg.fusion, cfg.rrf_k, cfg.ranker_path) == ("learned", 60.0, "")
    assert (cfg.cooc_window, cfg.cooc_max_neighbors, cfg.cooc_recency_half_life, cfg.cooc_score_window,
            cfg.cooc_pair_half_life) == (10, 300, 4.0, 20, 0.0)
    assert (cfg.half_life_s, cfg.fresh_window_s, cfg.trending_half_life_s) == (7 * 86400, 48 * 3600, 6 * 3600)
    counts = (cfg.ann_candidates, cfg.cooc_candidates, cfg.fresh_candidates, cfg.trending_candidates)
    assert counts == (200, 100, 50, 50)
    assert (cfg.mmr_lambda, cfg.creator_cap, cfg.top_k, cfg.history_len, cfg.dedupe_window) == (0.9, 2, 20, 50, 512)


def test_settings_override_from_environment_and_reject_unknown_keys(monkeypatch):
    class S(BaseSettings):  # what Settings will look like with `ranking` added
        model_config = SettingsConfigDict(env_prefix="AVREC_", env_nested_delimiter="__")
        ranking: RankingSettings = RankingSettings()

    monkeypatch.setenv("AVREC_RANKING__EVENT_WEIGHTS__VIEW", "0.5")
    monkeypatch.setenv("AVREC_RANKING__TOP_K", "7")
    s = S()
    assert s.ranking.event_weights.view == 0.5 and s.ranking.event_weights.like == 1.0
    assert s.ranking.top_k == 7
    with pytest.raises(ValueError):
        RankingSettings(event_weights={"watch": 1.0})
    with pytest.raises(ValueError):
        RankingSettings(mmr_lambda=1.5)


def test_event_weight_scales_view_and_complete_by_clamped_watch_ratio(cfg):
    assert event_weight("view", None, cfg) == pytest.approx(0.3)
    assert event_weight("view", 0.5, cfg) == pytest.approx(0.15)
    assert event_weight("view", 0.0, cfg) == pytest.approx(0.3 * 0.1)  # floor
    assert event_weight("view", 3.0, cfg) == pytest.approx(0.3)  # capped at 1
    assert event_weight("complete", 0.9, cfg) == pytest.approx(1.08)
    assert event_weight("like", 0.1, cfg) == 1.0  # other types ignore the ratio
    assert event_weight("skip", 0.05, cfg) == pytest.approx(-0.3)
    with pytest.raises(RankingError):
        event_weight("watch", None, cfg)
    with pytest.raises(RankingError):
        event_weight("view", float("nan"), cfg)


# -- user state --------------------------------------------------------------------------
def test_first_event_sets_vector_and_clock(cfg):
    s = UserState()
    assert user_vector(s) is None and user_vector(None) is None
    assert like(s, "e1", "a", e(0), T0, cfg, "share")
    np.testing.assert_array_equal(s.sum_vec, 1.5 * e(0))
    assert s.updated_ts == T0 and s.n_events == 1
    np.testing.assert_allclose(user_vector(s), e(0))


def test_decay_halves_contribution_after_one_half_life(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg)
    like(s, "e2", "b", e(1), T0 + H, cfg)
    np.testing.assert_allclose(s.sum_vec, 0.5 * e(0) + e(1), rtol=1e-6)
    like(s, "e3", "c", e(2), T0 + 3 * H, cfg)
    np.testing.assert_allclose(s.sum_vec, 0.125 * e(0) + 0.25 * e(1) + e(2), rtol=1e-6)
    assert s.updated_ts == T0 + 3 * H


def test_late_event_is_decayed_not_the_past_grown(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0 + H, cfg)
    like(s, "e2", "b", e(1), T0, cfg)  # arrives late, one half-life older
    np.testing.assert_allclose(s.sum_vec, e(0) + 0.5 * e(1), rtol=1e-6)
    assert s.updated_ts == T0 + H
    assert history_ids(s) == ["b", "a"]  # newest last by event time


def test_result_does_not_depend_on_arrival_order(cfg):
    rng = np.random.default_rng(0)
    types = ["view", "like", "skip", "share"]
    events = [(f"e{i}", f"i{i}", rng.normal(size=D), types[i % 4], T0 + rng.uniform(0, 3 * H)) for i in range(30)]
    a, b = UserState(), UserState()
    for ev in events:
        apply_interaction(a, ev[0], ev[1], ev[2], ev[3], 0.7, ev[4], cfg)
    for ev in reversed(events):
        apply_interaction(b, ev[0], ev[1], ev[2], ev[3], 0.7, ev[4], cfg)
    assert a.updated_ts == b.updated_ts
    np.testing.assert_allclose(a.sum_vec, b.sum_vec, rtol=1e-4, atol=1e-5)


def test_duplicate_event_ids_are_not_applied_twice(cfg):
    s = UserState()
    assert like(s, "e1", "a", e(0), T0, cfg)
    before = s.to_dict()
    assert not like(s, "e1", "a", e(0), T0 + 10, cfg)
    assert not like(s, "e1", "b", e(1), T0 + 10, cfg, "share")
    assert s.to_dict() == before


def test_dedupe_window_is_bounded(cfg):
    cfg = cfg.model_copy(update={"dedupe_window": 4})
    s = UserState()
    for i in range(6):
        like(s, f"e{i}", f"i{i}", e(i), T0 + i, cfg, "view")
    assert list(s.recent_event_ids) == ["e2", "e3", "e4", "e5"]
    assert like(s, "e0", "i0", e(0), T0 + 9, cfg, "view")  # forgotten: applied again


def test_negative_events_move_the_vector_away_and_hide(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg)
    like(s, "e2", "b", e(1), T0, cfg)
    close_to_a = (e(0) + 0.2 * e(2)) / np.linalg.norm(e(0) + 0.2 * e(2))
    cos_before = float(user_vector(s) @ close_to_a)
    like(s, "e3", "c", close_to_a, T0 + 60, cfg, "dislike")
    assert float(user_vector(s) @ close_to_a) < cos_before - 0.3
    assert float(user_vector(s) @ e(1)) > 0.7  # now mostly "b"
    assert "c" in s.hidden and "c" in s.seen and "c" not in history_ids(s)
    like(s, "e4", "b", e(1), T0 + 120, cfg, "skip")
    assert "b" not in s.hidden and history_ids(s) == ["a"]  # skip retracts, does not hide


def test_like_cancelled_by_dislike_is_cold(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg)
    like(s, "e2", "a", e(0), T0, cfg, "dislike")
    assert user_vector(s) is None and s.n_events == 2 and "a" in s.hidden


def test_history_is_bounded_newest_last_and_keeps_strongest_type(cfg):
    cfg = cfg.model_copy(update={"history_len": 3, "seen_max": 4})
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg, "share")
    like(s, "e2", "b", e(1), T0 + 1, cfg, "view", 0.5)
    like(s, "e3", "a", e(0), T0 + 2, cfg, "view")  # a moves to the end, still "share"
    assert [(h.item_id, h.event_type) for h in s.history] == [("b", "view"), ("a", "share")]
    assert s.history[-1].ts == T0 + 2
    for i, item in enumerate("cdef"):
        like(s, f"x{i}", item, e(2 + i), T0 + 10 + i, cfg, "comment")
    assert history_ids(s) == ["d", "e", "f"]
    assert list(s.seen) == ["c", "d", "e", "f"]  # LRU bound


def test_event_without_vector_updates_everything_but_the_vector(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg)
    assert like(s, "e2", "b", None, T0 + H, cfg)
    np.testing.assert_allclose(s.sum_vec, 0.5 * e(0), rtol=1e-6)
    assert history_ids(s) == ["a", "b"] and "b" in s.seen


def test_bad_inputs_raise_and_leave_state_unchanged(cfg):
    s = UserState()
    like(s, "e1", "a", e(0), T0, cfg)
    before = s.to_dict()
    with pytest.raises(RankingError):
        like(s, "e2", "b", np.ones(D + 1), T0 + 1, cfg)
    with pytest.raises(AvrecError):
        like(s, "e3", "b", e(1), T0 + 1, cfg, "watch")
    with pytest.raises(RankingError):
        like(s, "e4", "b", [np.nan] * D, T0 + 1, cfg)
    assert s.to_dict() == before


def test_serialisation_round_trip_is_exact(cfg):
    rng = np.random.default_rng(1)
    s = UserState()
    for i in range(40):
        v = rng.normal(size=384).astype(np.float32)
        v /= np.linalg.norm(v)
        apply_interaction(s, f"e{i}", f"item-{i % 25}", v, ["view", "like", "hide", "complete"][i % 4],
                          rng.uniform(), T0 + rng.uniform(0, 2 * H), cfg)
    d = json.loads(json.dumps(s.to_dict()))
    r = UserState.from_dict(d)
    assert r.sum_vec.dtype == np.float32
    np.testing.assert_array_equal(r.sum_vec, s.sum_vec)
    assert (r.updated_ts, r.n_events) == (s.updated_ts, s.n_events)
    assert r.history == s.history and list(r.seen) == list(s.seen) and list(r.hidden) == list(s.hidden)
    assert list(r.recent_event_ids) == list(s.recent_event_ids)
    assert r.to_dict() == s.to_dict()
    assert UserState.from_dict(UserState().to_dict()).sum_vec is None
    with pytest.raises(StateFormatError):
        UserState.from_dict({**d, "v": 99})
    with pytest.raises(StateFormatError):
        UserState.from_dict({"v": 1})


# -- ingest ---------------------------------------------------------------------------------
def test_ingest_feeds_trending_and_cooccurrence_once_per_user_item(cfg):
    tr, co = new_trending(cfg), new_cooccurrence(cfg)
    u = UserState()
    assert ingest_interaction(u, "e1", "a", e(0), "like", None, T0, cfg, co, tr)
    assert ingest_interaction(u, "e2", "b", e(1), "view", 1.0, T0, cfg, co, tr)
    assert not ingest_interaction(u, "e2", "b", e(1), "view", 1.0, T0, cfg, co, tr)  # duplicate
    assert ingest_interaction(u, "e3", "b", e(1), "like", None, T0, cfg, co, tr)  # re-interaction
    assert co.pops == {"a": 1.0, "b": 1.0} and co.row("a") == {"b": 1.0} and co.row("b") == {"a": 1.0}
    np.testing.assert_allclose(tr.score(["a", "b"], T0), [1.0, 1.3])  # weights: like 1, view 0.3 + like 1
    assert ingest_interaction(u, "e4", "c", e(2), "dislike", None, T0, cfg, co, tr)
    assert "c" not in tr and "c" not in co.pops  # negative feedback feeds neither
