"""Trending (forward-decayed counter) and item-item co-occurrence."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import MutableMapping

import pytest

from streams.ranking import CoOccurrence, DecayedCounter, RankingError, StateFormatError

H = 6 * 3600.0
T0 = 1_700_000_000.0


# -- trending -------------------------------------------------------------------------------
def test_trending_score_halves_every_half_life():
    c = DecayedCounter(H)
    c.update("a", T0, 2.0)
    assert c.score(["a"], T0)[0] == pytest.approx(2.0)
    assert c.score(["a"], T0 + H)[0] == pytest.approx(1.0)
    assert c.score(["a"], T0 + 3 * H)[0] == pytest.approx(0.25)
    c.update("a", T0 + H, 1.0)
    assert c.score(["a"], T0 + H)[0] == pytest.approx(2.0)
    assert c.score(["zzz"], T0)[0] == 0.0


def test_trending_ranks_by_decayed_engagement():
    c = DecayedCounter(H)
    for i in range(3):
        c.update("old", T0 + i, 1.0)  # 3 events at T0
    c.update("new", T0 + 3 * H, 1.0)  # 1 event three half-lives later
    c.update("mid", T0 + 2 * H, 1.0)
    c.update("busy", T0 + H, 3.0)  # weight 3 two half-lives before `now`
    top = c.top(4, T0 + 3 * H)
    assert [i for i, _ in top] == ["new", "busy", "mid", "old"]
    assert dict(top) == {
        "new": pytest.approx(1.0), "busy": pytest.approx(0.75), "mid": pytest.approx(0.5),
        "old": pytest.approx(3 / 8, rel=1e-3),
    }
    # All scores share one decay factor, so the order is the same at any `now`.
    assert [i for i, _ in c.top(4, T0)] == [i for i, _ in top]
    c.update("old", T0 + 3 * H, 1.0)
    assert c.top(1, T0 + 3 * H)[0] == ("old", pytest.approx(1 + 3 / 8, rel=1e-3))


def test_trending_top_is_bounded_and_ties_go_by_id():
    c = DecayedCounter(H)
    for iid in ["c", "a", "b"]:
        c.update(iid, T0)
    assert c.top(2, T0) == [("a", pytest.approx(1.0)), ("b", pytest.approx(1.0))]
    assert len(c.top(10, T0)) == 3 and c.top(0, T0) == []


def test_trending_late_events_and_far_timestamps_do_not_overflow():
    c = DecayedCounter(H)
    c.update("a", T0 + 10 * H)
    c.update("a", T0)  # late by 10 half-lives
    assert c.score(["a"], T0 + 10 * H)[0] == pytest.approx(1 + 2**-10)
    c.update("b", 1e11)  # ~3000 years from now: 2**(t/h) would overflow float64
    assert c.score(["b"], 1e11 + H)[0] == pytest.approx(0.5)


def test_trending_remove_and_prune():
    c = DecayedCounter(H, max_items=10)
    for i in range(25):
        c.update(f"i{i:02d}", T0, float(i + 1))  # heavier later
    assert len(c) <= 10
    assert [i for i, _ in c.top(3, T0)] == ["i24", "i23", "i22"]
    assert c.remove("i24") and not c.remove("i24")
    assert "i24" not in c and c.top(1, T0)[0][0] == "i23"
    c.update("i24", T0, 0.5)
    assert "i24" in c


def test_trending_rejects_non_positive_weights():
    with pytest.raises(RankingError):
        DecayedCounter(H).update("a", T0, 0.0)
    with pytest.raises(RankingError):
        DecayedCounter(H).update("a", T0, -1.0)


def test_trending_serialisation_round_trip():
    c = DecayedCounter(H, max_items=100)
    for i in range(30):
        c.update(f"i{i % 7}", T0 + i * 600, 1 + i % 3)
    c.remove("i3")
    r = DecayedCounter.from_dict(json.loads(json.dumps(c.to_dict())))
    assert r.top(10, T0 + H) == c.top(10, T0 + H)
    assert r.to_dict() == c.to_dict()
    r.update("i1", T0)  # still usable after loading
    with pytest.raises(StateFormatError):
        DecayedCounter.from_dict({"v": 2})


# -- co-occurrence ---------------------------------------------------------------------------
class CopyingTable(MutableMapping):
    """Like a Faust table: reads hand back copies, only assignment changes the stored value."""

    def __init__(self):
        self.data = {}
        self.writes = 0

    def __getitem__(self, k):
        return copy.deepcopy(self.data[k])

    def __setitem__(self, k, v):
        self.writes += 1
        self.data[k] = copy.deepcopy(v)

    def __delitem__(self, k):
        del self.data[k]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def users_co(co: CoOccurrence, histories: list[list[str]]) -> None:
    for hist in histories:
        for i, item in enumerate(hist):
            co.add(hist[:i], item)


@pytest.mark.parametrize("backing", ["dict", "table"])
def test_cooccurrence_counts_symmetric_pairs_and_normalises(backing):
    co = CoOccurrence() if backing == "dict" else CoOccurrence(CopyingTable(), CopyingTable())
    users_co(co, [["a", "b", "c"], ["a", "b"], ["a", "d"], ["e"]])
    assert co.row("a") == {"b": 2.0, "c": 1.0, "d": 1.0} and co.row("b") == {"a": 2.0, "c": 1.0}
    assert dict(co.pops) == {"a": 3.0, "b": 2.0, "c": 1.0, "d": 1.0, "e": 1.0}
    nb = co.neighbors("a", 5)
    assert nb[0] == ("b", pytest.approx(2 / math.sqrt(6)))
    assert [j for j, _ in nb] == ["b", "c", "d"]  # c, d tie: by id
    assert nb[1][1] == pytest.approx(1 / math.sqrt(3))
    assert co.neighbors("e", 5) == [] and co.neighbors("nope", 5) == []


def test_score_candidates_sums_over_history_and_names_the_source():
    co = CoOccurrence()
    users_co(co, [["a", "x"], ["a", "x"], ["b", "x"], ["b", "y"], ["a", "z"]])
    # user history a, b: x = 2/sqrt(3*3) + 1/sqrt(2*3), y = 1/sqrt(2*1), z = 1/sqrt(3*1)
    out = co.score_candidates_explained(["a", "b"], 10)
    assert [j for j, _, _ in out] == ["x", "y", "z"]
    assert out[0][1] == pytest.approx(2 / 3 + 1 / math.sqrt(6))
    assert out[0][2] == "a" and out[1][2] == "b"
    assert co.score_candidates(["a", "b"], 1) == [("x", pytest.approx(out[0][1]))]
    assert [j for j, _ in co.score_candidates(["a", "b"], 10, exclude={"x"})] == ["y", "z"]
    assert all(j not in ("a", "b") for j, _ in co.score_candidates(["a", "b", "x"], 10))


def test_cooccurrence_window_and_row_bound():
    co = CoOccurrence(max_neighbors=4, window=3)
    co.add(["h1", "h2", "h3", "h4", "h5"], "n")
    assert set(co.row("n")) == {"h3", "h4", "h5"}  # only the last `window` history items
    for i in range(20):
        co.add([f"o{i}"], "hub", weight=float(i + 1))
    assert len(co.row("hub")) <= 4 + 1  # bound plus slack
    assert "o19" in co.row("hub") and "o0" not in co.row("hub")  # highest counts survive


def test_cooccurrence_remove_and_round_trip():
    co = CoOccurrence()
    users_co(co, [["a", "b", "c"], ["b", "c"]])
    r = CoOccurrence.from_dict(json.loads(json.dumps(co.to_dict())))
    assert r.to_dict() == co.to_dict()
    co.remove("b")
    assert "b" not in co.counts and "b" not in co.pops
    assert all("b" not in co.row(i) for i in ("a", "c"))
    assert co.row("a") == {"c": 1.0}
    r.merge_row("a", {"c": 2.0, "q": 1.0}, pop=1.0)
    assert r.row("a")["c"] == 3.0 and r.pops["a"] == 2.0
    with pytest.raises(StateFormatError):
        CoOccurrence.from_dict({"v": 1, "counts": []})


def test_score_candidates_recency_weights_the_newest_history_items_most():
    co = CoOccurrence(recency_half_life=1.0)
    users_co(co, [["a", "x"], ["a", "x"], ["b", "x"], ["b", "y"], ["a", "z"]])
    # History a (older), b (newest): b counts 1, a counts 0.5 ** (1 / 1) = 0.5.
    # x = 0.5 * 2/sqrt(3*3) + 1 * 1/sqrt(2*3), y = 1 * 1/sqrt(2*1), z = 0.5 * 1/sqrt(3*1)
    # (0.741, 0.707, 0.289: the margin of x over y shrinks from 0.37 unweighted to 0.03)
    out = co.score_candidates_explained(["a", "b"], 10)
    assert [j for j, _, _ in out] == ["x", "y", "z"]
    assert out[0][1] == pytest.approx(0.5 * 2 / 3 + 1 / math.sqrt(6))
    assert out[1][1] == pytest.approx(1 / math.sqrt(2))
    assert out[2][1] == pytest.approx(0.5 / math.sqrt(3))
    # The explaining item is the one contributing most after weighting: for x that is now b
    # (a: 0.5 * 2 / sqrt(3) = 0.577 before the 1/sqrt(p_x); b: 1 / sqrt(2) = 0.707).
    assert out[0][2] == "b"
    # An explicit half-life overrides the store's own; 0 = plain (unweighted) item-kNN.
    plain = co.score_candidates(["a", "b"], 10, recency_half_life=0.0)
    assert [j for j, _ in plain] == ["x", "y", "z"] and plain[0][1] == pytest.approx(2 / 3 + 1 / math.sqrt(6))
    assert co.history_weights(3) == [1.0, 0.5, 0.25]
    assert CoOccurrence().history_weights(3) == [1.0, 1.0, 1.0]
    assert co.history_weights(2, recency_half_life=2.0) == pytest.approx([1.0, 2 ** -0.5])


def test_recency_weights_count_distinct_items_within_the_window():
    co = CoOccurrence(window=2, recency_half_life=1.0)
    users_co(co, [["a", "x"], ["b", "y"], ["c", "z"]])
    # Newest first, distinct: c (weight 1), b (0.5); a is beyond the window of 2 and the repeated c counts once.
    out = dict(co.score_candidates(["a", "b", "c", "c"], 10))
    assert out == {"z": pytest.approx(1.0), "y": pytest.approx(0.5)}


def test_recency_half_life_must_be_finite_and_not_negative():
    with pytest.raises(RankingError):
        CoOccurrence(recency_half_life=-1.0)
    with pytest.raises(RankingError):
        CoOccurrence(recency_half_life=float("inf"))


def test_pair_half_life_weights_pairs_by_distance_in_the_history():
    co = CoOccurrence(window=3, pair_half_life=1.0)
    # n pairs with c (just before it, d = 0: 1), b (d = 1: 0.5) and a (d = 2: 0.25); z is beyond the window.
    assert co.add(["z", "a", "b", "c"], "n") == 3
    assert co.row("n") == {"c": 1.0, "b": 0.5, "a": 0.25}
    assert co.row("a") == {"n": 0.25} and co.row("c") == {"n": 1.0}
    assert co.pops["n"] == 1.0  # popularity still counts users, not pairs
    plain = CoOccurrence(window=3)
    plain.add(["z", "a", "b", "c"], "n")
    assert plain.row("n") == {"c": 1.0, "b": 1.0, "a": 1.0}
    with pytest.raises(RankingError):
        CoOccurrence(pair_half_life=-0.5)
