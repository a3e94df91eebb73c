"""The demo's catalogue and synthetic users (``avrec demo``), without the stack."""

from __future__ import annotations

import collections
import time

import pytest

from streams.demo import (
    CLICK_SHARE,
    SHOWN_ITEMS,
    TASTE_SHARE,
    InteractionFeed,
    generated_catalogue,
    microlens_catalogue,
    microlens_title,
    zipf_weights,
)
from streams.records import Interaction, Recommendation, RecommendedItem, Upload, validate
from streams.settings import Settings

NOW = time.time()


def test_generated_catalogue_is_valid_uploads_with_one_taste_per_theme():
    cat = generated_catalogue(60, NOW)
    assert len(cat.uploads) == 60
    assert len({u["item_id"] for u in cat.uploads}) == 60
    for u in cat.uploads:
        validate(Upload, u, now=NOW)
    assert sorted(len(v) for v in cat.tastes.values()) == [10] * 6
    for theme, ids in cat.tastes.items():
        assert all(i.startswith(f"demo-{theme}-") for i in ids)


def test_microlens_title_splits_off_the_hashtags():
    assert microlens_title("Duck intestines, super hot # I am the king # homemade food") == (
        "Duck intestines, super hot", ["I am the king", "homemade food"])
    assert microlens_title("# only tags # here") == ("only tags", ["only tags", "here"])


def test_microlens_catalogue_puts_the_videos_first_with_their_media(tmp_path):
    (tmp_path / "MicroLens-50k_titles.csv").write_text(
        "item,title\n" + "".join(f'{i},"title {i} # tag{i}"\n' for i in range(1, 21)), encoding="utf-8")
    for clip in ("7", "12"):
        (tmp_path / f"{clip}.mp4").write_bytes(b"")
    cat = microlens_catalogue(tmp_path, n_titles=5, n_videos=1, now=NOW)
    ids = [u["item_id"] for u in cat.uploads]
    assert ids[0] == "ml12" and len(ids) == 6 and len(set(ids)) == 6  # sorted by name: 12.mp4 before 7.mp4
    assert cat.uploads[0]["video_uri"] == (tmp_path / "12.mp4").resolve().as_uri()
    assert cat.uploads[0]["title"] == "title 12" and "tag12" in cat.uploads[0]["tags"]
    assert all("video_uri" not in u for u in cat.uploads[1:])
    assert len(cat.later) == 14 and not {u["item_id"] for u in cat.later} & set(ids)  # kept back for later


def test_zipf_weights_sum_to_one_and_fall():
    w = zipf_weights(12)
    assert sum(w) == pytest.approx(1.0)
    assert all(a > b for a, b in zip(w, w[1:]))


def test_feed_is_skewed_toward_busy_users_and_each_users_taste():
    cat = generated_catalogue(120, NOW)
    feed = InteractionFeed(Settings(), cat, n_users=6, rate=1.0, seed=3)
    events = [ev for k in range(3000) for kind, ev in feed.next_events(NOW + k)]
    for ev in events[:50]:
        validate(Interaction, ev, now=NOW + 3000)
    by_user = collections.Counter(e["user_id"] for e in events)
    assert [u for u, _ in by_user.most_common(2)] == feed.users[:2]
    user = feed.users[0]
    mine = [e for e in events if e["user_id"] == user]
    in_taste = sum(e["item_id"] in set(feed.tastes[user]) for e in mine) / len(mine)
    # The taste share plus the random picks that fall in the taste by chance (1 theme in 6).
    assert in_taste == pytest.approx(TASTE_SHARE + (1 - TASTE_SHARE) / 6, abs=0.05)
    assert len({e["event_id"] for e in events}) == len(events)


def test_a_user_is_shown_each_new_list_once_and_then_clicks_in_it():
    cat = generated_catalogue(120, NOW)
    feed = InteractionFeed(Settings(), cat, n_users=3, rate=1.0, seed=5)
    user = feed.users[1]
    shown = [u["item_id"] for u in cat.uploads[:15]]
    rec = Recommendation(user_id=user, items=[RecommendedItem(item_id=i, score=1.0, reasons=["r"]) for i in shown],
                         model_version="hybrid-v1", source_event_id="ev-7", event_ts=NOW, produced_at=NOW)
    feed.offer(rec)
    first = feed.next_events(NOW, user)
    assert [kind for kind, _ in first] == ["impressions", "interactions"]
    imp = first[0][1]  # the impression event of docs/EVENTS.md
    assert imp == {"event_id": f"demo-imp-{user}-ev-7", "user_id": user, "items": shown[:SHOWN_ITEMS],
                   "model_version": "hybrid-v1", "list_event_id": "ev-7", "ts": NOW}
    later = [feed.next_events(NOW + k, user) for k in range(1, 2001)]
    assert all(kind == "interactions" for evs in later for kind, _ in evs), "a list is shown once"
    picks = [evs[0][1]["item_id"] for evs in later]
    # Clicks in the shown list, plus the taste picks that happen to be in it.
    in_list = sum(p in set(shown[:SHOWN_ITEMS]) for p in picks) / len(picks)
    assert in_list >= CLICK_SHARE - 0.05


def test_items_kept_back_are_uploaded_now_and_join_their_theme():
    cat = generated_catalogue(60, NOW)
    feed = InteractionFeed(Settings(), cat, n_users=6, rate=1.0, run_tag="t1")
    assert feed.users[0] == "demo-t1-00"
    rec = feed.next_upload(NOW + 5)
    validate(Upload, rec, now=NOW + 5)
    assert rec["created_at"] == NOW + 5 and rec["item_id"] not in {u["item_id"] for u in cat.uploads}
    assert rec["item_id"] in feed.all_items and rec["item_id"] in cat.tastes[rec["tags"][0]]
    feed.later.clear()
    assert feed.next_upload(NOW + 6) is None
