"""streams.records: round trips, every validation rule, and dead letters that keep the exact bytes."""

from __future__ import annotations

import base64
import math
import random
import time

import orjson
import pytest

from streams.exceptions import AvrecError
from streams.records import (
    MAX_DLQ_ORIGINAL_BYTES,
    MAX_FUTURE_S,
    MAX_RECORD_BYTES,
    DeadLetter,
    Interaction,
    Recommendation,
    RecordError,
    Upload,
    dead_letter,
    decode_control,
    decode_dead_letter,
    decode_interaction,
    decode_kind,
    decode_recommendation,
    decode_upload,
    encode,
    watch_ratio,
)

NOW = 1_700_000_000.0


def upload(**over) -> dict:
    rec = {
        "event_id": "e-1",
        "item_id": "item-1",
        "creator_id": "creator-1",
        "title": "A title",
        "description": "words",
        "tags": ["music", "live"],
        "audio_uri": "file:///tmp/a.wav",
        "video_uri": "file:///tmp/a.mp4",
        "thumbnail_uri": None,
        "duration_s": 12.5,
        "created_at": NOW,
    }
    rec.update(over)
    return rec


def interaction(**over) -> dict:
    rec = {"event_id": "e-2", "user_id": "user-1", "item_id": "item-1", "type": "view", "watch_ms": 5000, "ts": NOW}
    rec.update(over)
    return rec


def recommendation(**over) -> dict:
    rec = {
        "user_id": "user-1",
        "items": [
            {"item_id": "item-1", "score": 0.9, "reasons": ["similar to item-7", "popular"]},
            {"item_id": "item-2", "score": -0.25, "reasons": []},
        ],
        "model_version": "hybrid-v1",
        "source_event_id": "e-2",
        "event_ts": NOW,
        "produced_at": NOW + 0.5,
    }
    rec.update(over)
    return rec


def raw(obj) -> bytes:
    return orjson.dumps(obj)


def rejects(decoder, obj_or_bytes, field: str | None, stage: str = "validate", **kw) -> RecordError:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else raw(obj_or_bytes)
    with pytest.raises(RecordError) as info:
        decoder(data, **kw)
    err = info.value
    assert isinstance(err, AvrecError)
    assert err.stage == stage, err.reason
    if field is not None:
        assert field in err.fields, err.reason
        assert field in err.reason
    return err


# ---------------------------------------------------------------- round trips


def test_upload_round_trip_and_key():
    u = decode_upload(raw(upload()))
    assert u.item_id == "item-1" and u.tags == ["music", "live"] and u.duration_s == 12.5
    assert decode_upload(encode(u)) == u
    assert u.kafka_key() == b"item-1"


def test_upload_defaults():
    u = decode_upload(raw({k: v for k, v in upload().items() if k not in {"description", "tags", "audio_uri"}}))
    assert u.description == "" and u.tags == [] and u.audio_uri is None


def test_interaction_round_trip_and_key():
    i = decode_interaction(raw(interaction()))
    assert decode_interaction(encode(i)) == i
    assert i.kafka_key() == b"user-1"
    for t in ("view", "like", "share", "comment", "complete", "skip", "dislike", "hide"):
        assert decode_interaction(raw(interaction(type=t))).type == t
    assert decode_interaction(raw(interaction(watch_ms=None))).watch_ms is None


def test_control_round_trip_and_key():
    t = decode_control(raw({"event_id": "c1", "action": "takedown", "item_id": "item-1", "ts": NOW, "reason": "dmca"}))
    assert t.kafka_key() == b"item-1" and decode_control(encode(t)) == t
    f = decode_control(raw({"event_id": "c2", "action": "forget_user", "user_id": "user-1", "ts": NOW}))
    assert f.kafka_key() == b"user-1" and f.reason is None


def test_recommendation_round_trip_and_key():
    r = decode_recommendation(raw(recommendation()))
    assert [it.item_id for it in r.items] == ["item-1", "item-2"]
    assert r.items[0].reasons[0] == "similar to item-7"
    assert decode_recommendation(encode(r)) == r
    assert r.kafka_key() == b"user-1"


def test_decode_kind_dispatches():
    assert isinstance(decode_kind("uploads", raw(upload())), Upload)
    assert isinstance(decode_kind("interactions", raw(interaction())), Interaction)
    assert isinstance(decode_kind("recommendations", raw(recommendation())), Recommendation)
    with pytest.raises(ValueError):
        decode_kind("nope", b"{}")


def test_iso_timestamps_become_unix_seconds():
    assert decode_upload(raw(upload(created_at="2023-11-14T22:13:20Z"))).created_at == NOW
    assert decode_interaction(raw(interaction(ts="2023-11-14T23:13:20+01:00"))).ts == NOW
    assert decode_interaction(raw(interaction(ts="2023-11-14T22:13:20"))).ts == NOW  # naive = UTC
    rejects(decode_interaction, interaction(ts="yesterday"), "ts")
    rejects(decode_interaction, interaction(ts="1700000000"), "ts")  # numbers must be numbers


def test_ints_are_fine_for_floats():
    u = decode_upload(raw(upload(duration_s=12, created_at=int(NOW))))
    assert u.duration_s == 12.0 and isinstance(u.created_at, float)


def test_unknown_fields_are_ignored():
    u = decode_upload(raw(upload(future_field={"x": [1, 2]}, schema_version=3)))
    assert "future_field" not in encode(u).decode()


# ---------------------------------------------------------------- decode stage


def test_non_utf8_is_a_decode_error_not_a_crash():
    err = rejects(decode_upload, b'{"title": "\xff\xfe"}', None, stage="decode")
    assert "UTF-8" in err.reason
    rejects(decode_interaction, b"\xc3\x28", None, stage="decode")


def test_non_json_and_non_objects_are_decode_errors():
    rejects(decode_upload, b"not json", None, stage="decode")
    rejects(decode_upload, b"", None, stage="decode")
    rejects(decode_upload, b'{"a": 1', None, stage="decode")
    err = rejects(decode_upload, b"[1, 2]", None, stage="decode")
    assert "object" in err.reason
    rejects(decode_upload, b"null", None, stage="decode")


def test_nan_and_infinity_are_rejected():
    for bad in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = raw(upload()).replace(b'"duration_s":12.5', b'"duration_s":' + bad)
        assert bad in body
        rejects(decode_upload, body, None, stage="decode")
    # Built from Python, the models refuse them too.
    for field, value in (("duration_s", math.nan), ("created_at", math.inf)):
        with pytest.raises(ValueError):
            Upload.model_validate(upload(**{field: value}))
    with pytest.raises(ValueError):
        Recommendation.model_validate(recommendation(items=[{"item_id": "a", "score": math.nan}]))


def test_huge_payloads_are_rejected_before_parsing():
    big = raw(upload(description="x" * MAX_RECORD_BYTES))
    err = rejects(decode_upload, big, None, stage="decode")
    assert "1 MiB" in err.reason
    # Over the limit even when the JSON is broken: the size check comes first.
    rejects(decode_upload, b"{" * (MAX_RECORD_BYTES + 1), None, stage="decode")


# ---------------------------------------------------------------- validate stage


@pytest.mark.parametrize("field", ["event_id", "item_id", "creator_id"])
def test_upload_ids(field):
    rejects(decode_upload, upload(**{field: ""}), field)
    rejects(decode_upload, upload(**{field: "   "}), field)
    rejects(decode_upload, upload(**{field: "x" * 129}), field)
    rejects(decode_upload, upload(**{field: "a\nb"}), field)
    rejects(decode_upload, upload(**{field: "a\x00b"}), field)
    rejects(decode_upload, upload(**{field: 17}), field)
    rejects(decode_upload, upload(**{field: None}), field)
    assert getattr(decode_upload(raw(upload(**{field: "x" * 128}))), field) == "x" * 128
    assert getattr(decode_upload(raw(upload(**{field: "ünïcødé:1"}))), field) == "ünïcødé:1"


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_interaction_ids(field):
    rejects(decode_interaction, interaction(**{field: ""}), field)
    rejects(decode_interaction, interaction(**{field: "x" * 129}), field)
    rejects(decode_interaction, interaction(**{field: "tab\there"}), field)


@pytest.mark.parametrize("field", ["event_id", "item_id", "creator_id", "title", "created_at"])
def test_upload_required_fields(field):
    rec = upload()
    del rec[field]
    err = rejects(decode_upload, rec, field)
    assert "required" in err.reason


def test_text_limits():
    rejects(decode_upload, upload(title="t" * 1001), "title")
    assert decode_upload(raw(upload(title="t" * 1000))).title == "t" * 1000
    rejects(decode_upload, upload(description="d" * 5001), "description")
    assert len(decode_upload(raw(upload(description="d" * 5000))).description) == 5000


def test_tag_limits():
    rejects(decode_upload, upload(tags=[f"t{i}" for i in range(51)]), "tags")
    assert len(decode_upload(raw(upload(tags=[f"t{i}" for i in range(50)]))).tags) == 50
    rejects(decode_upload, upload(tags=["x" * 65]), "tags")
    rejects(decode_upload, upload(tags=[""]), "tags")
    rejects(decode_upload, upload(tags="music"), "tags")  # a string is not a list
    rejects(decode_upload, upload(tags=["ok", 3]), "tags.1")


def test_duration_limits():
    rejects(decode_upload, upload(duration_s=-1), "duration_s")
    rejects(decode_upload, upload(duration_s=24 * 3600 + 1), "duration_s")
    assert decode_upload(raw(upload(duration_s=0))).duration_s == 0
    rejects(decode_upload, upload(duration_s="12"), "duration_s")


def test_wrong_types_are_not_coerced():
    rejects(decode_upload, upload(title=["a", "list"]), "title")
    rejects(decode_upload, upload(title=123), "title")
    rejects(decode_upload, upload(description={"a": 1}), "description")
    rejects(decode_upload, upload(video_uri=True), "video_uri")
    rejects(decode_interaction, interaction(watch_ms="5000"), "watch_ms")
    rejects(decode_interaction, interaction(watch_ms=12.5), "watch_ms")
    rejects(decode_interaction, interaction(watch_ms=True), "watch_ms")
    rejects(decode_interaction, interaction(watch_ms=-1), "watch_ms")
    rejects(decode_interaction, interaction(ts=True), "ts")
    rejects(decode_interaction, interaction(ts=[NOW]), "ts")
    rejects(decode_recommendation, recommendation(items={"item_id": "a"}), "items")
    rejects(decode_recommendation, recommendation(items=[{"item_id": "a", "score": "0.5"}]), "items.0.score")


def test_interaction_type_must_be_known():
    err = rejects(decode_interaction, interaction(type="love"), "type")
    assert "like" in err.reason
    rejects(decode_interaction, interaction(type="VIEW"), "type")


def test_timestamps_must_be_positive_and_not_in_the_future():
    rejects(decode_interaction, interaction(ts=0), "ts")
    rejects(decode_interaction, interaction(ts=-5), "ts")
    rejects(decode_interaction, interaction(ts="1969-12-31T00:00:00Z"), "ts")
    now = time.time()
    err = rejects(decode_interaction, interaction(ts=now + MAX_FUTURE_S + 3600), "ts")
    assert "future timestamp" in err.reason
    rejects(decode_upload, upload(created_at=now + 2 * MAX_FUTURE_S), "created_at")
    # Within the allowance is fine; the allowance and "now" are per-call arguments.
    assert decode_interaction(raw(interaction(ts=now + MAX_FUTURE_S - 60))).ts > now
    rejects(decode_interaction, interaction(ts=now + 120), "ts", max_future_s=60)
    assert decode_interaction(raw(interaction(ts=now + 10 * MAX_FUTURE_S)), max_future_s=None)
    rejects(decode_interaction, interaction(ts=NOW + 100), "ts", now=NOW, max_future_s=10)
    rejects(decode_recommendation, recommendation(produced_at=now + 2 * MAX_FUTURE_S), "produced_at")


def test_control_targets_and_actions():
    rejects(decode_control, {"event_id": "c", "action": "takedown", "user_id": "u", "ts": NOW}, "item_id")
    rejects(decode_control, {"event_id": "c", "action": "forget_user", "item_id": "i", "ts": NOW}, "user_id")
    rejects(decode_control, {"event_id": "c", "action": "delete_everything", "item_id": "i", "ts": NOW}, "action")
    rejects(decode_control, {"event_id": "c", "action": "takedown", "item_id": "", "ts": NOW}, "item_id")
    rejects(decode_control, {"event_id": "c", "action": "takedown", "item_id": "i", "ts": NOW, "reason": 5}, "reason")


def test_recommendation_rules():
    rejects(decode_recommendation, recommendation(items=[{"item_id": "", "score": 1}]), "items.0.item_id")
    rejects(decode_recommendation, recommendation(items=[{"item_id": "a", "score": 1, "reasons": "x"}]), "items.0.reasons")
    rejects(decode_recommendation, recommendation(model_version=""), "model_version")
    rec = recommendation()
    del rec["user_id"]
    rejects(decode_recommendation, rec, "user_id")
    assert decode_recommendation(raw(recommendation(items=[]))).items == []


def test_several_errors_are_all_named():
    err = rejects(decode_upload, upload(item_id="", title="t" * 2000, tags="x"), "item_id")
    assert {"item_id", "title", "tags"} <= set(err.fields)


# ---------------------------------------------------------------- dead letters and helpers


def test_dead_letter_keeps_the_exact_original_bytes():
    original = b"\xff\x00not json \xc3\x28" + bytes(range(256))
    key = b"user-\xff"
    dl = dead_letter(original, key, RecordError("decode", "payload is not valid UTF-8"), "decode", "interactions", 3, 42)
    assert isinstance(dl, DeadLetter)
    assert dl.stage == "decode" and dl.error == "payload is not valid UTF-8"
    assert (dl.topic, dl.partition, dl.offset) == ("interactions", 3, 42)
    assert base64.b64decode(dl.original) == original == dl.original_bytes()
    assert dl.key_bytes() == key and not dl.original_truncated and dl.original_size == len(original)
    assert dl.failed_at == pytest.approx(time.time(), abs=60)
    back = decode_dead_letter(encode(dl))
    assert back == dl and back.original_bytes() == original


def test_dead_letter_from_exceptions_and_strings():
    dl = dead_letter(b"{}", None, ValueError("boom"), "media", "uploads", 0, 1)
    assert dl.error == "ValueError: boom" and dl.key is None
    assert dead_letter(b"", b"", "no such item", "unknown_item").error == "no such item"


def test_dead_letter_caps_huge_originals():
    original = b"z" * (MAX_DLQ_ORIGINAL_BYTES + 10)
    dl = dead_letter(original, b"k", "too big", "decode", "uploads", 0, 0)
    assert dl.original_truncated and dl.original_size == len(original)
    assert dl.original_bytes() == original[:MAX_DLQ_ORIGINAL_BYTES]
    assert len(encode(dl)) < 1024 * 1024


def test_watch_ratio():
    i = decode_interaction(raw(interaction(watch_ms=5000)))
    assert watch_ratio(i, 10.0) == 0.5
    assert watch_ratio(i, 2.0) == 1.0  # looping counts as complete
    assert watch_ratio(i, None) is None
    assert watch_ratio(i, 0) is None
    assert watch_ratio(i, math.nan) is None
    assert watch_ratio(decode_interaction(raw(interaction(watch_ms=None))), 10.0) is None


def test_record_error_is_an_avrec_error():
    err = RecordError("validate", "title: too long", ["title"])
    assert isinstance(err, AvrecError) and err.stage == "validate" and err.reason == "title: too long"


# -- encode_list: the worker's lists without building the models ------------------------------


def _both(user_id, items, model_version="v1", source_event_id="e1", event_ts=1_700_000_000.0,
          produced_at=None):
    """(encode_list's bytes or its ValueError, encode(Recommendation(...))'s bytes or its ValueError)."""
    from streams.records import Recommendation, RecommendedItem, encode, encode_list

    produced_at = time.time() if produced_at is None else produced_at
    out = []
    try:
        out.append(encode_list(user_id, items, model_version, source_event_id, event_ts, produced_at))
    except ValueError as exc:
        out.append(exc)
    try:
        out.append(encode(Recommendation(
            user_id=user_id, items=[RecommendedItem(item_id=i, score=s, reasons=r) for i, s, r in items],
            model_version=model_version, source_event_id=source_event_id, event_ts=event_ts,
            produced_at=produced_at)))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        out.append(exc)
    return out


def test_encode_list_gives_the_models_bytes():
    rng = random.Random(7)
    titles = ["Toy Story (1995)", "Amélie", "千と千尋の神隠し", "a \"quoted\" title", "tab\tin title", "x" * 60]
    for n in range(200):
        items = [(f"item-{rng.randrange(10**6)}", round(rng.uniform(-1, 3), 6),
                  [f"because you liked {rng.choice(titles)}" for _ in range(rng.randrange(0, 4))])
                 for _ in range(rng.randrange(0, 25))]
        fast, model = _both(f"user-{n}", items, event_ts=rng.choice([1_700_000_000.5, 1_700_000_001]))
        assert fast == model
    # A score that is an int and an id of any printable Unicode are the model's too.
    fast, model = _both("ユーザー", [("café-1", 1, ["new upload: exploring"])])
    assert fast == model


@pytest.mark.parametrize("bad", [
    dict(user_id=""), dict(user_id="a'b"), dict(user_id="x\x07"), dict(user_id="u" * 129),
    dict(items=[("", 0.5, [])]), dict(items=[("i\\1", 0.5, [])]), dict(items=[("i1", float("nan"), [])]),
    dict(items=[("i1", float("inf"), [])]), dict(items=[("i1", 0.5, ["r"] * 17)]),
    dict(items=[("i1", 0.5, ["r" * 1001])]), dict(items=[(f"i{k}", 0.5, []) for k in range(1001)]),
    dict(model_version=" "), dict(source_event_id="e\n1"), dict(event_ts=0.0), dict(event_ts=float("nan")),
    dict(event_ts=time.time() + 2 * 86400), dict(produced_at=-1.0),
])
def test_encode_list_refuses_what_the_model_refuses(bad):
    args = dict(user_id="u1", items=[("i1", 0.5, ["because"])])
    args.update(bad)
    fast, model = _both(**args)
    assert isinstance(model, ValueError), model
    assert isinstance(fast, ValueError), fast
