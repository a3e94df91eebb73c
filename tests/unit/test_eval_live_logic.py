"""Live-mode helpers that need no stack: matching lists to events, agreement, slicing, worker settings."""

from __future__ import annotations

import numpy as np
import pytest

from streams.evaluation.dataset import EvalLog, Event, ItemMeta, Upload, select_users
from streams.evaluation.live import LiveLists, LiveRecord, _Outstanding, agreement, latency_summary, ranking_env
from streams.evaluation.state import Catalogue, CoreState
from streams.ranking import RankingSettings


def test_agreement_counts_identical_lists_and_mean_overlap():
    a = [[1, 2, 3], [1, 2, 3], [4, 5, 6], []]
    b = [[1, 2, 3], [2, 1, 3], [4, 5, 7], []]
    got = agreement(a, b, 3)
    assert got["identical"] == pytest.approx(2 / 4)  # same order required; two empty lists agree
    assert got["overlap"] == pytest.approx((1 + 1 + 2 / 3 + 1) / 4)  # two empty lists overlap fully
    assert agreement([[1, 2]], [[1, 2, 3, 4]], 3)["overlap"] == pytest.approx(2 / 3)  # over the longer list
    assert got["n"] == 4
    assert agreement([[1, 2, 9]], [[1, 2, 8]], 2)["identical"] == 1.0  # only the top k count


def test_outstanding_resolves_a_users_events_up_to_the_tagged_one():
    o = _Outstanding()
    for e in ("e1", "e2", "e3"):
        o.add("u", e)
    o.add("v", "f1")
    assert o.n == 4
    o.resolve("u", "e2")  # one batch held e1 and e2: its list is tagged with e2
    assert o.n == 2 and o.per_user["u"] == ["e3"]
    o.resolve("u", "nope")  # e.g. a list tagged with an event of another run
    assert o.n == 2
    assert o.expire(3600) == []
    o.since["f1"] -= 10_000
    assert o.expire(60) == ["f1"] and o.n == 1


def _log() -> EvalLog:
    items = [ItemMeta(f"i{j}", "c", f"t{j}", "", (), 0.0) for j in range(3)]
    stream = [Upload(0), Upload(1), Event("a1", "ua", 0, "like", None, 1.0), Event("b1", "ub", 1, "like", None, 2.0),
              Upload(2), Event("a2", "ua", 2, "like", None, 3.0), Event("a3", "ua", 1, "view", None, 4.0)]
    raw = [(b"k", str(k).encode()) for k in range(len(stream))]
    return EvalLog("t", "jsonl", items, {it.item_id: j for j, it in enumerate(items)}, stream, 4, {}, raw)


def test_live_lists_are_the_list_current_before_each_event():
    elog = _log()
    cat = Catalogue(elog.items, np.eye(3, dtype=np.float32))
    core = CoreState(RankingSettings())
    rec = lambda ev, items: LiveRecord("ua", ev, items, len(items), 0.0, 0.0)  # noqa: E731
    # The worker published after a1 and after a3 (a2 and a3 shared a batch: a2 got no list of its own).
    m = LiveLists(core, cat, {"a1": rec("a1", ["i1", "i2"]), "a3": rec("a3", ["i0", "zz"])})
    assert m.recommend("ua", 0.0, 20) == ([], None)  # nothing published before the user's first event
    m.observe(elog.stream[2])
    assert m.recommend("ua", 0.0, 20) == ([1, 2], 2)
    m.observe(elog.stream[5])  # a2: superseded, the list stays the one after a1
    assert m.recommend("ua", 0.0, 1) == ([1], 1)
    m.observe(elog.stream[6])
    assert m.recommend("ua", 0.0, 20) == ([0], 1) and m.unknown_items == 1


def test_select_users_keeps_every_upload_and_the_raw_records_in_step():
    elog = _log()
    one = select_users(elog, 1, seed=0)
    users = {e.user_id for e in one.stream if isinstance(e, Event)}
    assert len(users) == 1
    assert sum(isinstance(e, Upload) for e in one.stream) == 3
    assert one.n_interactions == (3 if users == {"ua"} else 1)
    assert [r for r in one.raw] == [elog.raw[elog.stream.index(e)] for e in one.stream]
    assert select_users(elog, 5) is elog


def test_ranking_env_carries_only_the_differences():
    base = RankingSettings()
    assert ranking_env(base, base) == {}
    other = RankingSettings(top_k=30, fusion="rrf",
                            source_weights={**base.source_weights.model_dump(), "ann": 0.5})
    assert ranking_env(base, other) == {"AVREC_RANKING__TOP_K": "30", "AVREC_RANKING__FUSION": "rrf",
                                        "AVREC_RANKING__SOURCE_WEIGHTS__ANN": "0.5"}


def test_latency_summary_in_milliseconds():
    s = latency_summary(np.array([0.01, 0.02, 0.03, 0.04]))
    assert s["n"] == 4 and s["p50_ms"] == pytest.approx(25.0) and s["max_ms"] == pytest.approx(40.0)
    assert latency_summary(np.array([])) == {"n": 0}
