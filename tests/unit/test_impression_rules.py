"""Impressions: the record, the attribution rules, the state they live in, the counters they feed."""

from __future__ import annotations

import orjson
import pytest

from streams.kafka.admin import check_copartitioned
from streams.kafka.exceptions import TopicConfigError
from streams.ranking import UserState
from streams.ranking.config import RankingSettings
from streams.ranking.ingest import ingest_user
from streams.records import (
    MAX_IMPRESSION_ITEMS,
    INTERACTION_TYPES,
    Impression,
    RecordError,
    decode_impression,
    decode_kind,
    encode,
)
from streams.services import impressions as online
from streams.services.impressions import CLICK_TYPES, Click, Shown, apply_impression, attribute
from streams.settings import KafkaSettings, TopicsSettings, TopicSpec
from streams.web.metrics import REGISTRY

T0 = 1_700_000_000.0
WINDOW = 1800.0


def impression(event_id: str = "imp-1", items=("a", "b", "c"), ts: float = T0, mv: str = "hybrid-v1",
               **over) -> Impression:
    rec = {"event_id": event_id, "user_id": "u1", "items": list(items), "model_version": mv, "ts": ts, **over}
    return decode_impression(orjson.dumps(rec), now=T0)


def show(state: UserState, imp: Impression, kept: int = 20, dedupe: int = 512) -> Shown | None:
    return apply_impression(state, imp, kept=kept, window_s=WINDOW, dedupe=dedupe)


def click(state: UserState, item: str, ts: float, etype: str = "view") -> Click | None:
    return attribute(state, item, etype, ts, window_s=WINDOW)


# -- the record --------------------------------------------------------------------------------


def test_impression_decodes_and_round_trips():
    imp = impression(list_event_id="ev-9", ts="2023-11-14T22:13:20Z")
    assert imp.ts == T0 and imp.items == ["a", "b", "c"] and imp.list_event_id == "ev-9"
    assert imp.kafka_key() == b"u1"
    assert decode_impression(encode(imp), now=T0) == imp
    assert isinstance(decode_kind("impressions", encode(imp), now=T0), Impression)
    assert impression().list_event_id is None  # optional


@pytest.mark.parametrize("over, field, words", [
    ({"items": []}, "items", "at least 1"),
    ({"items": [f"i{n}" for n in range(MAX_IMPRESSION_ITEMS + 1)]}, "items", "at most 200"),
    ({"items": ["a", "b", "a"]}, "items", "appears twice"),
    ({"items": "a"}, "items", "valid list"),
    ({"items": ["a", 7]}, "items.1", "valid string"),
    ({"items": ["a", "it's"]}, "items.1", "apostrophe"),
    ({"model_version": ""}, "model_version", "non-empty"),
    ({"ts": 0}, "ts", "> 0"),
    ({"ts": T0 + 3 * 86400}, "ts", "future timestamp"),
    ({"ts": "1700000000"}, "ts", "ISO-8601"),
    ({"list_event_id": 5}, "list_event_id", "valid string"),
])
def test_invalid_impressions_are_rejected_naming_the_field(over, field, words):
    rec = {"event_id": "e", "user_id": "u1", "items": ["a"], "model_version": "m", "ts": T0, **over}
    with pytest.raises(RecordError) as err:
        decode_impression(orjson.dumps(rec), now=T0)
    assert err.value.stage == "validate" and field in err.value.fields and words in err.value.reason


@pytest.mark.parametrize("missing", ["event_id", "user_id", "items", "model_version", "ts"])
def test_required_fields(missing):
    rec = {"event_id": "e", "user_id": "u1", "items": ["a"], "model_version": "m", "ts": T0}
    del rec[missing]
    with pytest.raises(RecordError, match=f"{missing}: is required"):
        decode_impression(orjson.dumps(rec), now=T0)


def test_click_types_are_the_positive_interaction_types():
    assert CLICK_TYPES == {"view", "like", "share", "comment", "complete"}
    assert CLICK_TYPES < set(INTERACTION_TYPES)


# -- attribution ---------------------------------------------------------------------------------


def test_an_impression_counts_once_and_its_items():
    s = UserState()
    assert show(s, impression()) == Shown("hybrid-v1", 3)
    assert show(s, impression()) is None  # a re-delivery: no change
    assert len(s.impressions) == 1 and list(s.impression_ids) == ["imp-1"]


def test_clicks_within_the_window_count_once_per_item_and_the_first_is_the_hit():
    s = UserState()
    show(s, impression())
    assert click(s, "a", T0 + 10) == Click("hybrid-v1", "imp-1", "a", hit=True)
    assert click(s, "a", T0 + 20, "like") is None  # the same item again
    assert click(s, "b", T0 + 30, "complete") == Click("hybrid-v1", "imp-1", "b", hit=False)
    assert click(s, "z", T0 + 40) is None  # not shown
    assert s.impressions[0].clicked == ["a", "b"]


def test_window_edges():
    s = UserState()
    show(s, impression())
    assert click(s, "a", T0) is not None  # at the impression's own time
    assert click(s, "b", T0 + WINDOW) is not None  # the window's last second
    s2 = UserState()
    show(s2, impression())
    assert click(s2, "a", T0 + WINDOW + 0.001) is None


def test_interactions_before_the_impression_do_not_count():
    s = UserState()
    show(s, impression(ts=T0 + 100))
    assert click(s, "a", T0 + 99) is None
    assert s.impressions[0].clicked == []
    assert click(s, "a", T0 + 101) is not None  # a later one still does


@pytest.mark.parametrize("etype", ["skip", "dislike", "hide"])
def test_negative_reactions_are_not_clicks(etype):
    s = UserState()
    show(s, impression())
    assert click(s, "a", T0 + 1, etype) is None
    assert click(s, "a", T0 + 2, "view").hit  # the impression is still without a hit


def test_the_most_recent_impression_shown_before_the_interaction_wins():
    s = UserState()
    show(s, impression("old", items=["a", "b"], ts=T0, mv="v1"))
    show(s, impression("new", items=["b", "c"], ts=T0 + 60, mv="v2"))
    show(s, impression("later", items=["b"], ts=T0 + 600, mv="v3"))  # after the interaction below
    got = click(s, "b", T0 + 120)
    assert got == Click("v2", "new", "b", hit=True)
    assert click(s, "a", T0 + 130) == Click("v1", "old", "a", hit=True)  # only the old one showed a
    # b was clicked on "new" already: a second interaction does not fall back to "old".
    assert click(s, "b", T0 + 140) is None


def test_an_impression_that_arrives_late_is_ordered_by_its_time():
    s = UserState()
    show(s, impression("second", items=["a"], ts=T0 + 60, mv="v2"))
    show(s, impression("first", items=["a"], ts=T0, mv="v1"))  # produced later, shown earlier
    assert [i.event_id for i in s.impressions] == ["first", "second"]
    assert click(s, "a", T0 + 90).impression_id == "second"


def test_kept_impressions_are_bounded_oldest_first():
    s = UserState()
    for n in range(5):
        show(s, impression(f"i{n}", items=[f"x{n}"], ts=T0 + n), kept=3)
    assert [i.event_id for i in s.impressions] == ["i2", "i3", "i4"]
    assert click(s, "x0", T0 + 10) is None  # evicted
    assert click(s, "x3", T0 + 10) is not None
    # Ids are remembered beyond the kept impressions: an evicted one re-delivered is still a duplicate.
    assert show(s, impression("i0", items=["x0"], ts=T0), kept=3) is None


def test_impressions_expire_once_the_user_is_past_their_window():
    s = UserState()
    show(s, impression("old", ts=T0))
    show(s, impression("new", items=["q"], ts=T0 + WINDOW + 5))
    assert [i.event_id for i in s.impressions] == ["new"]


def applied(state: UserState, event_id: str, item: str, ts: float, etype: str = "view") -> Click | None:
    """An interaction as the worker applies it: ingested, then attributed (a duplicate is neither)."""
    if ingest_user(state, event_id, item, None, etype, None, ts, RankingSettings()) is None:
        return None
    return click(state, item, ts)


def test_clicks_applied_before_their_impression_arrived_count_when_it_does():
    """No order across topics: the impression may come after the clicks it led to."""
    s = UserState()
    assert applied(s, "e0", "b", T0 - 5, "like") is None  # before the list was shown: never its click
    assert applied(s, "e1", "a", T0 + 10) is None  # no impression yet
    assert applied(s, "e2", "c", T0 + 20, "share") is None
    assert applied(s, "e3", "z", T0 + 30) is None  # not in the list
    assert applied(s, "e4", "d", T0 + 40, "skip") is None  # not a click
    shown = show(s, impression(items=["a", "b", "c", "d", "z2"]))
    assert shown.late_clicks == (Click("hybrid-v1", "imp-1", "a", hit=True),
                                 Click("hybrid-v1", "imp-1", "c", hit=False))
    assert s.impressions[0].clicked == ["a", "c"]
    assert applied(s, "e5", "a", T0 + 50) is None  # a is counted already
    assert applied(s, "e6", "z2", T0 + 60) == Click("hybrid-v1", "imp-1", "z2", hit=False)  # in order again
    assert show(s, impression(items=["a", "b", "c", "d", "z2"])) is None  # re-delivered: nothing again


def test_late_clicks_only_within_the_window():
    s = UserState()
    applied(s, "e1", "a", T0 + WINDOW + 1)
    assert show(s, impression(items=["a"])).late_clicks == ()


def test_a_late_impression_does_not_recount_a_click_another_impression_has():
    s = UserState()
    show(s, impression("first", items=["a", "b"], ts=T0, mv="v1"))
    assert applied(s, "e1", "a", T0 + 10) == Click("v1", "first", "a", hit=True)
    late = show(s, impression("second", items=["a"], ts=T0 + 5, mv="v2"))  # shown in between, arrived after
    assert late.late_clicks == () and s.impressions[1].clicked == []


def test_late_clicks_are_counted():
    mv = "unit-late-v1"
    online.count([Shown(mv, 3, (Click(mv, "i1", "a", True), Click(mv, "i1", "b", False)))])
    row = online.online_metrics()[mv]
    assert (row["impressions"], row["impressed_items"], row["clicks"], row["hits"]) == (1, 3, 2, 1)


def test_attribution_follows_the_applied_interaction_and_ignores_duplicates():
    """As the worker does: attribute only when ingest_user applied the event (not a duplicate)."""
    cfg = RankingSettings()
    s = UserState()
    show(s, impression())
    clicks = []
    for event_id in ("e1", "e1"):  # the same interaction delivered twice
        if ingest_user(s, event_id, "a", None, "view", None, T0 + 5, cfg) is not None:
            clicks.append(click(s, "a", T0 + 5))
    assert clicks == [Click("hybrid-v1", "imp-1", "a", hit=True)]


def test_users_without_impressions_are_untouched():
    s = UserState()
    ingest = ingest_user(s, "e1", "a", None, "like", None, T0, RankingSettings())
    assert ingest is not None
    before = s.to_dict()
    assert click(s, "a", T0) is None
    assert s.to_dict() == before
    assert "impressions" not in before and "impression_ids" not in before


# -- the state ---------------------------------------------------------------------------------------


def test_state_round_trips_with_impressions_and_clicks():
    s = UserState()
    ingest_user(s, "e1", "a", [1.0, 0.0], "like", None, T0, RankingSettings())
    show(s, impression("i1", list_event_id="list-7"))
    show(s, impression("i2", items=["c", "d"], ts=T0 + 5, mv="v2"))
    click(s, "c", T0 + 6)
    data = orjson.loads(orjson.dumps(s.to_dict()))  # through JSON, as the changelog carries it
    back = UserState.from_dict(data)
    assert back.impressions == s.impressions and back.impression_ids == s.impression_ids
    assert back.impressions[0].list_event_id == "list-7" and back.impressions[1].clicked == ["c"]
    assert back.to_dict() == s.to_dict()
    # The restored state goes on where it left off: c is not clicked twice, d is no second hit.
    assert click(back, "c", T0 + 7) is None
    assert click(back, "d", T0 + 8) == Click("v2", "i2", "d", hit=False)
    assert show(back, impression("i1")) is None


def test_old_state_dicts_without_impressions_still_load():
    old = {"v": 1, "sum_vec": None, "updated_ts": T0, "n_events": 1, "recent_event_ids": ["e1"],
           "history": [["a", T0, "like"]], "seen": ["a"], "hidden": []}
    s = UserState.from_dict(old)
    assert s.impressions == [] and not s.impression_ids
    assert s.to_dict() == old  # and they are written back exactly as they were
    assert show(s, impression(ts=T0 + 1)).late_clicks == ()  # "a" was liked before it was shown
    assert click(s, "b", T0 + 2).hit


def test_a_malformed_kept_impression_is_a_state_format_error():
    from streams.ranking.exceptions import StateFormatError

    bad = UserState().to_dict() | {"impressions": [["i1", "v1", T0]]}
    with pytest.raises(StateFormatError):
        UserState.from_dict(bad)


# -- counters ----------------------------------------------------------------------------------------


def test_counters_and_online_metrics_per_model_version():
    mv = "unit-counters-v1"  # a label no other test uses: the registry is process-wide
    before = {name: REGISTRY.get_sample_value(f"{name}_total", {"model_version": mv}) or 0.0 for name in
              ("avrec_impressions", "avrec_impressed_items", "avrec_impression_clicks", "avrec_impression_hits")}
    assert before == dict.fromkeys(before, 0.0)
    assert online.online_metrics().get(mv) is None
    online.count([Shown(mv, 4), Shown(mv, 6), Click(mv, "i1", "a", True), Click(mv, "i1", "b", False),
                  Click(mv, "i2", "c", True)])
    after = {name: REGISTRY.get_sample_value(f"{name}_total", {"model_version": mv}) for name in before}
    assert after == {"avrec_impressions": 2, "avrec_impressed_items": 10, "avrec_impression_clicks": 3,
                     "avrec_impression_hits": 2}
    assert online.online_metrics()[mv] == {"impressions": 2, "impressed_items": 10, "clicks": 3, "hits": 2,
                                           "ctr": 0.3, "hit_rate": 1.0}


def test_online_metrics_without_impressions_have_no_rates():
    mv = "unit-clicks-only"  # e.g. the impression was counted by the worker that owned the user before
    online.count([Click(mv, "i1", "a", True)])
    row = online.online_metrics()[mv]
    assert row["clicks"] == 1 and row["impressions"] == 0 and row["ctr"] is None and row["hit_rate"] is None


# -- co-partitioning -----------------------------------------------------------------------------------


def test_impressions_must_be_co_partitioned_with_interactions():
    check_copartitioned(KafkaSettings())  # the defaults agree
    topics = TopicsSettings(interactions=TopicSpec(name="interactions", partitions=12))
    with pytest.raises(TopicConfigError, match="AVREC_KAFKA__TOPICS__IMPRESSIONS__PARTITIONS=12"):
        check_copartitioned(KafkaSettings(topics=topics))
    both = TopicsSettings(interactions=TopicSpec(name="interactions", partitions=12),
                          impressions=TopicSpec(name="impressions", partitions=12))
    check_copartitioned(KafkaSettings(topics=both))


def test_model_version_labels_are_bounded(monkeypatch, caplog):
    """Labels come from producers: past the bound, new model versions are counted as "other", not new series."""
    monkeypatch.setattr(online, "_labels", set())
    monkeypatch.setattr(online, "MAX_MODEL_VERSIONS", 2)
    tag = "unit-bound"
    other = REGISTRY.get_sample_value("avrec_impressions_total", {"model_version": online.OTHER}) or 0.0
    online.count([Shown(f"{tag}-a", 1), Shown(f"{tag}-b", 1), Shown(f"{tag}-c", 1), Shown(f"{tag}-d", 1),
                  Shown(f"{tag}-a", 1), Click(f"{tag}-e", "i", "x", True)])
    got = {mv: row["impressions"] for mv, row in online.online_metrics().items() if mv.startswith(tag)}
    assert got == {f"{tag}-a": 2, f"{tag}-b": 1}
    assert REGISTRY.get_sample_value("avrec_impressions_total", {"model_version": online.OTHER}) == other + 2
    assert REGISTRY.get_sample_value("avrec_impression_clicks_total", {"model_version": f"{tag}-e"}) is None
    assert sum("counted as 'other'" in r.getMessage() for r in caplog.records) == 1
