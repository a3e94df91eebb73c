"""Hostile input against one real worker (real Kafka, Triton and Milvus).

Hypothesis generates the records up front (``derandomize=True``, no example
database: the same records on every run), one strategy per category of bad
input, interleaved with valid events for a few users on a small, known,
text-only catalogue. Everything goes to one worker; then:

* every invalid record is in ``<topic>.dlq`` with the expected stage, its exact
  key and original bytes (compared as a multiset, so nothing is lost and nothing
  is dead-lettered twice), and an error naming the field or the problem;
* every valid event was applied exactly once (the user-state changelog's
  ``n_events`` equals the user's number of distinct valid event ids; duplicates
  are dropped, not dead-lettered), and each user's latest interaction-triggered
  list comes from their last event; every valid upload is in Milvus;
* media URIs that break the policy, or media that is truncated or too big, go to
  ``uploads.dlq`` at stage ``media`` with a reason that names the problem, while
  a valid video in the same batch is encoded with all three modalities;
* the worker is still alive at the end.

Ids in the generated *valid* events avoid ``'`` and ``\\``: ids with them
are invalid (see ``test_quote_and_backslash_ids_do_not_stall_the_worker``).
"""

from __future__ import annotations

import hashlib
import http.server
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer

from streams.records import (
    MAX_DESCRIPTION_CHARS,
    MAX_DLQ_ORIGINAL_BYTES,
    MAX_RECORD_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    decode_dead_letter,
    decode_recommendation,
)
from streams.vectors.milvus import milvus_client
from tests.mediagen import make_video
from tests.workerproc import WorkerProcess, poll_until, worker_env

pytestmark = pytest.mark.stack

NOW = time.time()
DAY = 86400.0
TYPES = ("view", "like", "share", "comment", "complete", "skip", "dislike", "hide")
MEDIA_MAX_BYTES = 200_000

# A small text-only catalogue; the ids are valid but unusual (Unicode, 128 characters, quotes, separators).
CATALOGUE = {
    "k-pasta": ("How to make fresh pasta at home", ["cooking", "pasta"]),
    "k-bread": ("Perfect sourdough bread recipe for beginners", ["baking"]),
    "кино-1": ("Electric SUV highway range review", ["cars", "ev"]),
    "🎬-ramen": ("Homemade ramen noodle soup from scratch", ["cooking"]),
    "k-" + "x" * 126: ("Formula one pit stop explained", ["racing"]),
    'k-"quoted"': ("Vintage muscle car restoration project", ["cars"]),
    "k-<b>&amp;%s{}": ("Motorcycle chain maintenance tutorial", ["motorbike"]),
    "k-\u2028-\u200b": ("Chocolate chip cookies that stay soft", ["dessert"]),
}
CAT_IDS = sorted(CATALOGUE)
USERS = ["u-alice", "ü-用户-😀", "u\u200bzero\u2028sep", "u-" + "y" * 126, 'u-"q"<b>%s{}[]']

# ----------------------------------------------------------------- generation


@dataclass(frozen=True)
class Sent:
    """One record produced: where it must end up."""

    category: str
    key: bytes | None
    value: bytes
    stage: str | None = None  # expected dead-letter stage; None: valid, must be applied and never dead-lettered
    hint: tuple[str, ...] = ()  # the dead letter's error must contain one of these
    user: str | None = None
    event_id: str | None = None
    item_id: str | None = None


def examples(strategy, n: int) -> list:
    """Up to ``n`` examples of ``strategy``, the same ones on every run."""
    out: list = []

    @hsettings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out


# ids that are valid (no control characters, not blank), minus the two characters that stall the worker
SAFE_ID_CHARS = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="'\\")


def id_text(max_size: int = 40):
    return st.text(SAFE_ID_CHARS, min_size=1, max_size=max_size).filter(lambda s: s.strip())


def repeat_to(s: str, n: int) -> str:
    return (s * (n // len(s) + 1))[:n]


def sized_text(limit: int):
    """Short text, or exactly at / one under the limit."""
    return st.one_of(st.text(max_size=30),
                     st.builds(repeat_to, st.text(min_size=1, max_size=4), st.sampled_from([limit - 1, limit])))


def over(limit: int):
    return st.builds(repeat_to, st.text(min_size=1, max_size=4), st.integers(limit + 1, limit * 4))


def _iso(t: float, offset_min: int, style: int) -> str:
    if style == 0:
        return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat()  # naive: read as UTC
    if style == 1:
        return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
    return datetime.fromtimestamp(t, timezone(timedelta(minutes=offset_min))).isoformat()


def _is_iso(s: str) -> bool:
    try:
        datetime.fromisoformat(s.strip())
        return True
    except ValueError:
        return False


valid_ts = st.one_of(
    st.floats(NOW - 30 * DAY, NOW),
    st.integers(int(NOW - 30 * DAY), int(NOW)),
    st.builds(_iso, st.floats(NOW - 30 * DAY, NOW), st.integers(-(23 * 60 + 59), 23 * 60 + 59), st.integers(0, 2)),
)
future_ts = st.one_of(
    st.floats(NOW + 2 * DAY, 1e300),
    st.integers(int(NOW + 2 * DAY), 2**63 - 1),
    st.datetimes(min_value=datetime.fromtimestamp(NOW + 2 * DAY, timezone.utc).replace(tzinfo=None),
                 max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat()),
)
nonpositive_ts = st.one_of(
    st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 0),
    st.datetimes(max_value=datetime(1970, 1, 1)).map(lambda d: d.isoformat()),  # 0001-01-01 included
)
i64 = st.integers(-(2**63), 2**63 - 1)  # what JSON (orjson) can carry as an integer
json_leaf = st.one_of(st.none(), st.booleans(), i64,
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                          max_size=3), max_leaves=6)
extra_fields = st.dictionaries(st.text(max_size=10).map(lambda k: "x_" + k), json_values, max_size=3)

wrong_for_str = st.one_of(i64, st.floats(allow_nan=False, allow_infinity=False),
                          st.booleans(), st.none(), st.lists(st.text(max_size=3), max_size=2),
                          st.dictionaries(st.text(max_size=3), i64, max_size=2))
wrong_for_optional_str = wrong_for_str.filter(lambda v: v is not None)
wrong_for_ts = st.one_of(
    st.booleans(), st.none(), st.lists(i64, max_size=2),
    st.dictionaries(st.text(max_size=3), i64, max_size=2),
    st.integers(1_000_000_000, 9_999_999_999).map(str),  # numeric strings are not unix seconds
    st.sampled_from(["", "now", "1700000000.5", "2024-13-01", "2024-02-30T00:00:00Z", "24:00", "T"]),
    st.text(max_size=12).filter(lambda s: not _is_iso(s)),
)
wrong_for_int = st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
                          st.floats(min_value=1.0, max_value=1e300),  # 5.0 is not an integer either
                          st.text(max_size=5), st.booleans(), st.lists(i64, max_size=2),
                          st.integers(-(2**63), -1))
wrong_for_float = st.one_of(st.text(max_size=5), st.booleans(), st.lists(i64, max_size=2),
                            st.dictionaries(st.text(max_size=3), i64, max_size=2))
blank_id = st.one_of(st.sampled_from(["", " ", "\u3000", "\u2003 \u00a0"]),
                     st.text(st.sampled_from(" \u3000\u2003\u00a0\u2029\u2028"), min_size=1, max_size=5))
control_id = st.builds(lambda a, c, b: a + c + b, st.text(SAFE_ID_CHARS, max_size=10),
                       st.characters(categories=["Cc"]), st.text(SAFE_ID_CHARS, max_size=10))
long_id = st.builds(repeat_to, id_text(5), st.integers(129, 20_000))
bad_id = st.one_of(blank_id, control_id, long_id)
bad_type = st.one_of(st.text(max_size=12).filter(lambda s: s not in TYPES),
                     st.sampled_from(["LIKE", "Like", " like", "like ", "views", "purchase", "like\x00", "ｌｉｋｅ"]))
junk_key = st.one_of(st.none(), st.just(b""), st.binary(max_size=8), st.just(b"\xff\xfe"))
NOT_UTF8 = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xe2\x82", b"\xf0\x9f\x98",
            b"\xc3\x28"]
NOT_JSON = [b"{", b"}", b"{not json", b"{'a': 1}", b'{"a":1,}', b'{"a" 1}', b"/* c */ {}", b'{"event_id": "a\x01b"}',
            b"\x00", b"   ", b"", b'{"a":1}{"b":2}', b"[1,2", b'"unterminated', b"nul", b"{\"a\":tru}"]
BAD_NUMBERS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"nan", b"1e400", b"-1e400", b"1E999", b"+1",
               b"01", b".5", b"1.", b"0x10"]
PLACEHOLDER = "__hostile_number__"


def valid_interaction(user=st.sampled_from(USERS), item=st.sampled_from(CAT_IDS)):
    return st.builds(
        lambda base, extra, wm: {**base, **extra, **wm},
        st.fixed_dictionaries({"event_id": id_text(), "user_id": user, "item_id": item,
                               "type": st.sampled_from(TYPES), "ts": valid_ts}),
        extra_fields,
        st.one_of(st.just({}), st.fixed_dictionaries({"watch_ms": st.none() | st.integers(0, 10**12)})),
    )


def valid_upload():
    tag = st.text(min_size=1, max_size=MAX_TAG_CHARS).filter(lambda t: t.strip())
    return st.builds(
        lambda base, opt, extra: {**base, **opt, **extra},
        st.fixed_dictionaries({"event_id": id_text(), "item_id": id_text(60), "creator_id": id_text(),
                               # a blank title with no description, tags or media is invalid:
                               # see test_upload_with_nothing_to_encode_is_not_an_encoder_failure
                               "title": sized_text(MAX_TITLE_CHARS).filter(str.strip), "created_at": valid_ts}),
        st.fixed_dictionaries({}, optional={
            "description": sized_text(MAX_DESCRIPTION_CHARS),
            "tags": st.one_of(st.lists(tag, max_size=5),
                              st.builds(lambda c: [repeat_to(c + str(i), MAX_TAG_CHARS) for i in range(MAX_TAGS)],
                                        st.text(min_size=1, max_size=2).filter(str.strip))),
            "audio_uri": st.sampled_from([None, ""]), "video_uri": st.sampled_from([None, ""]),
            "thumbnail_uri": st.none() | st.text(max_size=50) | st.just("x" * 4096),
            "duration_s": st.none() | st.sampled_from([0, 0.0, DAY]) | st.floats(0, DAY),
        }),
        extra_fields,
    )


def _with(ev: dict, field: str, value) -> dict:
    return {**ev, field: value}


def _without(ev: dict, field: str) -> dict:
    return {k: v for k, v in ev.items() if k != field}


def _insert(raw: bytes, at: int, bad: bytes) -> bytes:
    at = min(at, len(raw))
    return raw[:at] + bad + raw[at:]


def _number_literal(ev: dict, field: str, literal: bytes) -> bytes:
    return orjson.dumps({**ev, field: PLACEHOLDER}).replace(b'"' + PLACEHOLDER.encode() + b'"', literal)


def _oversize(ev: dict, extra: int, fill: str) -> bytes:
    raw = orjson.dumps({**ev, "x_pad": ""})
    return orjson.dumps({**ev, "x_pad": fill * (MAX_RECORD_BYTES + extra - len(raw))})


def exactly_max_size(ev: dict) -> bytes:
    raw = _oversize(ev, 0, "a")
    assert len(raw) == MAX_RECORD_BYTES
    return raw


def _key(ev) -> bytes | None:
    for f in ("user_id", "item_id"):
        if isinstance(ev, dict) and isinstance(ev.get(f), str):
            return ev[f].encode()
    return None


def hostile(base, fields: dict[str, dict]) -> dict[str, tuple]:
    """Strategies of invalid records built from a valid ``base``: category -> (strategy, max_examples).

    ``fields`` says, per field, which values have the wrong type and whether it is an id, a timestamp, a
    number or required. Invalid records are keyed like valid ones, or with a junk key (none, empty, not UTF-8).
    """
    def field_of(pred):
        return st.sampled_from([f for f, spec in fields.items() if pred(spec)])

    def mutate(category, pick, values_for, stage="validate"):
        def build(ev, fv, junk, use_junk):
            bad = _with(ev, fv[0], fv[1])
            return Sent(category, junk if use_junk else _key(bad), orjson.dumps(bad), stage, (fv[0],))
        return st.builds(build, base, pick.flatmap(lambda f: st.tuples(st.just(f), values_for(f))), junk_key,
                         st.booleans())

    def raw(category, make, stage, hint):
        return st.builds(lambda r, junk: Sent(category, junk, r, stage, hint), make, junk_key)

    ts_field = next(f for f, s in fields.items() if s.get("ts"))
    required = [f for f, s in fields.items() if s.get("required")]
    dumped = base.map(orjson.dumps)
    return {
        "wrong_type": (mutate("wrong_type", field_of(lambda s: "wrong" in s), lambda f: fields[f]["wrong"]), 150),
        "bad_id": (mutate("bad_id", field_of(lambda s: s.get("id")), lambda f: bad_id), 100),
        "future_ts": (mutate("future_ts", st.just(ts_field), lambda f: future_ts), 50),
        "nonpositive_ts": (mutate("nonpositive_ts", st.just(ts_field), lambda f: nonpositive_ts), 50),
        "missing_field": (st.builds(lambda ev, f, jk, j: Sent("missing_field", jk if j else _key(ev),
                                                               orjson.dumps(_without(ev, f)), "validate", (f,)),
                                    base, st.sampled_from(required), junk_key, st.booleans()), 40),
        "not_utf8": (raw("not_utf8", st.one_of(
            st.builds(_insert, dumped, st.integers(0, 400), st.sampled_from(NOT_UTF8)),
            base.map(lambda ev: orjson.dumps({**ev, "x_note": "café"}).replace("é".encode(), b"\xe9")),  # Latin-1
        ), "decode", ("UTF-8",)), 60),
        "not_json": (raw("not_json", st.one_of(
            dumped.flatmap(lambda r: st.integers(0, len(r) - 1).map(lambda k: r[:k])),  # truncated
            dumped.map(lambda r: r + b"x"), dumped.map(lambda r: b"\xef\xbb\xbf" + r),  # trailing junk, BOM
            base.map(lambda ev: repr(ev).encode()), st.sampled_from(NOT_JSON),
        ), "decode", ("JSON", "UTF-8")), 80),
        "nan_inf": (raw("nan_inf", st.builds(_number_literal, base,
                                             st.sampled_from([f for f, s in fields.items() if s.get("number")]),
                                             st.sampled_from(BAD_NUMBERS)), "decode", ("JSON",)), 40),
        "not_object": (raw("not_object", st.one_of(
            st.lists(json_values, max_size=3), st.text(max_size=20), i64,
            st.floats(allow_nan=False, allow_infinity=False), st.none(), st.booleans(),
            st.lists(base, min_size=1, max_size=2),
        ).map(orjson.dumps), "decode", ("JSON object",)), 40),
        "over_1MiB": (raw("over_1MiB", st.builds(_oversize, base, st.integers(1, 300_000), st.sampled_from("a0 é")),
                          "decode", ("limit",)), 4),
    }


INTERACTION_FIELDS = {
    "event_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "user_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "item_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "type": {"wrong": wrong_for_str, "required": True},
    "watch_ms": {"wrong": wrong_for_int, "number": True},
    "ts": {"wrong": wrong_for_ts, "ts": True, "required": True, "number": True},
}
UPLOAD_FIELDS = {
    "event_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "item_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "creator_id": {"wrong": wrong_for_str, "id": True, "required": True},
    "title": {"wrong": wrong_for_str, "required": True},
    "description": {"wrong": wrong_for_str},
    "tags": {"wrong": st.one_of(st.text(max_size=5), i64, st.none(), st.dictionaries(st.text(max_size=3), i64),
                                st.lists(wrong_for_optional_str, min_size=1, max_size=3))},
    "audio_uri": {"wrong": wrong_for_optional_str},
    "video_uri": {"wrong": wrong_for_optional_str},
    "thumbnail_uri": {"wrong": wrong_for_optional_str},
    "duration_s": {"wrong": wrong_for_float, "number": True},
    "created_at": {"wrong": wrong_for_ts, "ts": True, "required": True, "number": True},
}
UPLOAD_TOO_BIG = {
    "title": over(MAX_TITLE_CHARS),
    "description": over(MAX_DESCRIPTION_CHARS),
    "tags": st.one_of(
        st.builds(lambda n: [f"t{i}" for i in range(n)], st.integers(MAX_TAGS + 1, 500)),  # too many
        st.builds(lambda t, n: ["ok", repeat_to(t, n)], st.text(min_size=1, max_size=3), st.integers(65, 1000)),
        st.builds(lambda b: ["ok", b], st.sampled_from(["", " ", "\u3000", "\t\n"])),  # blank tag
    ),
    "audio_uri": st.builds(lambda n: "file:///" + "a" * n, st.integers(4097, 20_000)),
    "video_uri": st.builds(lambda n: "https://127.0.0.1/" + "v" * n, st.integers(4097, 20_000)),
    "thumbnail_uri": st.builds(lambda n: "x" * n, st.integers(4097, 20_000)),
    "duration_s": st.one_of(st.floats(max_value=-1e-9, allow_infinity=False), st.integers(-(2**63), -1),
                            st.floats(min_value=DAY + 1e-3, allow_infinity=False), st.integers(int(DAY) + 1, 2**63 - 1)),
}


def interaction_records() -> list[Sent]:
    """Valid and hostile interactions, not yet interleaved (the closing events are built by the test)."""
    out: list[Sent] = []
    valid = examples(valid_interaction(), 150)
    for i, ev in enumerate(valid):
        ev["event_id"] = f"{ev['event_id'][:100]}#v{i}"
        out.append(Sent("valid", ev["user_id"].encode(), orjson.dumps(ev), user=ev["user_id"],
                        event_id=ev["event_id"]))
    for i, ev in enumerate(valid[::4]):  # the same bytes again: applied once, never dead-lettered
        out.append(Sent("duplicate", ev["user_id"].encode(), orjson.dumps(ev), user=ev["user_id"],
                        event_id=ev["event_id"]))
    for i, ev in enumerate(valid[1::7]):  # another event under an old id: dropped as a duplicate
        other = {**ev, "type": TYPES[(TYPES.index(ev["type"]) + 1) % len(TYPES)], "ts": NOW - 1 - i}
        out.append(Sent("duplicate_id_other_content", ev["user_id"].encode(), orjson.dumps(other),
                        user=ev["user_id"], event_id=ev["event_id"]))
    for i, ev in enumerate(examples(valid_interaction(user=id_text(100)), 30)):  # users seen once
        ev["user_id"] = f"{ev['user_id'][:100]}#n{i}"
        ev["event_id"] = f"{ev['event_id'][:100]}#n{i}"
        out.append(Sent("valid_new_user", ev["user_id"].encode(), orjson.dumps(ev), user=ev["user_id"],
                        event_id=ev["event_id"]))
    big = {"event_id": f"exactly-1MiB-{uuid.uuid4().hex[:6]}", "user_id": USERS[0], "item_id": CAT_IDS[0],
           "type": "view", "ts": NOW - 5}
    out.append(Sent("valid_exactly_1MiB", USERS[0].encode(), exactly_max_size(big), user=USERS[0],
                    event_id=big["event_id"]))
    base = valid_interaction()
    for strategy, n in hostile(base, INTERACTION_FIELDS).values():
        out += examples(strategy, n)
    out += examples(st.builds(lambda ev, t: Sent("unknown_type", _key(ev), orjson.dumps({**ev, "type": t}),
                                                 "validate", ("type",)), base, bad_type), 60)
    ghost = id_text(60).filter(lambda s: s not in CATALOGUE and not s.startswith("up-"))
    out += examples(st.builds(lambda ev, g: Sent("unknown_item", _key(ev), orjson.dumps({**ev, "item_id": g}),
                                                 "unknown_item", ("not in the catalogue",)), base, ghost), 80)
    return out


def upload_records() -> list[Sent]:
    out: list[Sent] = []
    valid = examples(valid_upload(), 40)
    for i, up in enumerate(valid):
        up["item_id"] = f"up-{i}-{up['item_id'][:60]}"
        up["event_id"] = f"{up['event_id'][:100]}#u{i}"
        out.append(Sent("valid", up["item_id"].encode(), orjson.dumps(up), event_id=up["event_id"],
                        item_id=up["item_id"]))
    for up in valid[::4]:
        out.append(Sent("duplicate", up["item_id"].encode(), orjson.dumps(up), event_id=up["event_id"],
                        item_id=up["item_id"]))
    big = {"event_id": "up-exactly-1MiB", "item_id": "up-exactly-1MiB", "creator_id": "c", "title": "big but fine",
           "created_at": NOW - 5}
    out.append(Sent("valid_exactly_1MiB", b"up-exactly-1MiB", exactly_max_size(big), event_id=big["event_id"],
                    item_id=big["item_id"]))
    base = valid_upload()
    for strategy, n in hostile(base, UPLOAD_FIELDS).values():
        out += examples(strategy, n)
    too_big = st.sampled_from(sorted(UPLOAD_TOO_BIG)).flatmap(lambda f: st.tuples(st.just(f), UPLOAD_TOO_BIG[f]))
    out += examples(st.builds(lambda up, fv, jk: Sent("over_limit", jk, orjson.dumps({**up, fv[0]: fv[1]}),
                                                      "validate", (fv[0],)), base, too_big, junk_key), 120)
    return out


# ----------------------------------------------------------------- Kafka helpers


def producer(w: WorkerProcess) -> KafkaProducer:
    # gzip, as real producers do: a > 1 MiB record then fits the broker's default message.max.bytes
    # (checked on the compressed batch) and reaches the worker, which must reject it itself.
    return KafkaProducer(**w.settings.kafka.kafka_python_config(), acks="all", linger_ms=5,
                         compression_type="gzip", max_request_size=8 * 1024 * 1024)


def topic(w: WorkerProcess, kind: str) -> str:
    return getattr(w.settings.kafka.topics, kind).name


def drain(consumer: KafkaConsumer, done, timeout: float, w: WorkerProcess, settle: float = 2.0) -> list:
    """Records until ``done(records)``, then ``settle`` seconds more (so extra records would show)."""
    got = poll_until(consumer, done, timeout, w)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        for recs in consumer.poll(timeout_ms=300).values():
            got.extend(recs)
    return got


_decoded: dict[tuple, object] = {}


def dl_of(r):
    """A consumed dead letter, decoded once (poll predicates look at every record on each poll)."""
    k = (r.topic, r.partition, r.offset)
    if k not in _decoded:
        _decoded[k] = decode_dead_letter(r.value)
    return _decoded[k]


def rec_of(r):
    k = (r.topic, r.partition, r.offset)
    if k not in _decoded:
        _decoded[k] = decode_recommendation(r.value) if r.value else None
    return _decoded[k]


def letter_key(key: bytes | None, value: bytes, stage: str) -> tuple:
    return key, hashlib.sha256(value).hexdigest(), len(value), stage


def check_dead_letters(letters: list, sent: list[Sent]) -> Counter:
    """Dead letters of ``sent`` (others on the topic are ignored) == the invalid ones, byte for byte."""
    by_hash = {hashlib.sha256(s.value).hexdigest(): s for s in sent}
    got, wrong = Counter(), []
    for r in letters:
        dl = dl_of(r)
        s = by_hash.get(dl.original_sha256)
        if s is None:
            continue
        original = dl.original_bytes()
        if dl.original_truncated:
            assert dl.original_size > MAX_DLQ_ORIGINAL_BYTES and original == s.value[:MAX_DLQ_ORIGINAL_BYTES]
        else:
            assert original == s.value and dl.original_size == len(s.value)
        assert dl.key_bytes() == r.key
        if s.stage is not None and s.hint and not any(h in dl.error for h in s.hint):
            wrong.append((s.category, s.value[:120], dl.stage, dl.error[:300]))
        got[letter_key(dl.key_bytes(), s.value, dl.stage)] += 1
    want = Counter(letter_key(s.key, s.value, s.stage) for s in sent if s.stage is not None)
    cat = {letter_key(s.key, s.value, s.stage or "-"): s.category for s in sent}
    missing = [(cat.get(k, "?"), k[3]) for k in (want - got).elements()]
    extra = [(cat.get(k, cat.get((*k[:3], "-"), "?")), k[3]) for k in (got - want).elements()]
    assert not missing and not extra, (f"missing dead letters (category, stage): {Counter(missing)}; "
                                       f"unexpected ones: {Counter(extra)}")
    assert not wrong, f"errors that do not name the problem: {wrong[:5]}"
    return got


def changelog_n_events(w: WorkerProcess, users: set[str], want: dict[str, int], timeout: float = 30) -> dict:
    s = w.settings
    consumer = KafkaConsumer(f"{s.app_id}-user-state-changelog", **s.kafka.kafka_python_config(),
                             auto_offset_reset="earliest", enable_auto_commit=False)
    latest: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    user = orjson.loads(r.key)
                    if user in users:
                        latest[user] = orjson.loads(r.value)["n_events"] if r.value else 0
            if latest == want:
                break
    finally:
        consumer.close()
    return latest


def wait_items(w: WorkerProcess, ids: list[str], timeout: float, fields=("item_id",)) -> list[dict]:
    client = milvus_client(w.settings.milvus)
    name = w.settings.milvus.items_collection
    deadline = time.monotonic() + timeout
    try:
        while True:
            rows = client.get(name, ids=ids, output_fields=list(fields)) if client.has_collection(name) else []
            if len(rows) == len(set(ids)) or time.monotonic() > deadline:
                return rows
            if not w.alive():
                raise RuntimeError(f"worker died:\n{w.tail()}")
            time.sleep(0.5)
    finally:
        client.close()


# ----------------------------------------------------------------- fixtures


class _Handler(http.server.SimpleHTTPRequestHandler):
    seen: list  # (path, Host header), set per server

    def do_GET(self):  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Host", "")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/x.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def _serve(directory: Path):
    seen: list = []
    handler = type("H", (_Handler,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """An allowed media root, a directory outside it, and two loopback HTTP servers (one allowed, one not)."""
    root = tmp_path_factory.mktemp("media-root")
    outside = tmp_path_factory.mktemp("media-outside")
    make_video(root / "ok.mp4", seconds=1.0, size=(96, 64))
    make_video(outside / "ok.mp4", seconds=1.0, size=(96, 64))
    big = make_video(root / "big.mp4", seconds=4.0, size=(320, 240), pattern="noise")
    assert big.stat().st_size > MEDIA_MAX_BYTES, big.stat().st_size
    assert (root / "ok.mp4").stat().st_size < MEDIA_MAX_BYTES
    full = make_video(outside / "full.mp4", seconds=1.0, size=(96, 64))
    (root / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # index (moov) cut off
    (root / "escape.mp4").symlink_to(outside / "ok.mp4")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "a-directory.mp4").mkdir()
    served = tmp_path_factory.mktemp("media-served")
    for name in ("ok.mp4", "big.mp4"):
        (served / name).write_bytes((root / name).read_bytes())
    allowed, allowed_seen = _serve(served)
    canary, canary_seen = _serve(served)
    yield {"root": root, "outside": outside, "port": allowed.server_address[1], "seen": allowed_seen,
           "canary_port": canary.server_address[1], "canary_seen": canary_seen}
    allowed.shutdown()
    canary.shutdown()


@pytest.fixture(scope="module")
def worker(stack, media, tmp_path_factory):
    unique = "hostile" + uuid.uuid4().hex[:8]
    env = worker_env(unique, {
        "AVREC_ENCODERS__MEDIA_ROOTS": orjson.dumps([str(media["root"])]).decode(),
        "AVREC_ENCODERS__MEDIA_HOSTS": orjson.dumps([f"127.0.0.1:{media['port']}"]).decode(),
        "AVREC_ENCODERS__MEDIA_MAX_BYTES": str(MEDIA_MAX_BYTES),
        "AVREC_ENCODERS__MEDIA_TIMEOUT_S": "5",
        # Interactions naming an unknown item are parked for their upload; these never come.
        "AVREC_WORKER__PARK_MAX_WAIT_S": "3", "AVREC_WORKER__ITEM_TICK_S": "0.5",
    })
    w = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    w.start()
    yield w
    w.stop()
    w.drop_collections()


@pytest.fixture(scope="module")
def catalogue(worker):
    ups = [{"event_id": f"cat-{i}", "item_id": iid, "creator_id": f"creator{i % 3}", "title": title, "tags": tags,
            "created_at": NOW - 3600} for i, (iid, (title, tags)) in enumerate(sorted(CATALOGUE.items()))]
    worker.produce("uploads", ups)
    rows = wait_items(worker, CAT_IDS, 120)
    assert len(rows) == len(CAT_IDS), f"catalogue never reached Milvus:\n{worker.tail()}"
    return ups


# ----------------------------------------------------------------- tests


def test_generated_hostile_events_are_dead_lettered_and_valid_ones_applied_once(worker, catalogue):
    interactions, uploads = interaction_records(), upload_records()
    rng = random.Random(20240501)
    rng.shuffle(interactions)
    rng.shuffle(uploads)
    closing = []
    for i, user in enumerate(USERS):  # each fixed user's last event, sent after everything else
        ev = {"event_id": f"close-{i}-{uuid.uuid4().hex[:6]}", "user_id": user,
              "item_id": CAT_IDS[i % len(CAT_IDS)], "type": "like", "ts": NOW}
        closing.append(Sent("closing", user.encode(), orjson.dumps(ev), user=user, event_id=ev["event_id"]))

    recs, idlq, udlq = worker.consumer("recommendations"), worker.consumer("interactions_dlq"), \
        worker.consumer("uploads_dlq")
    p = producer(worker)
    t_i, t_u = topic(worker, "interactions"), topic(worker, "uploads")
    for k in range(max(len(interactions), len(uploads))):  # interleave the two topics, as live traffic would
        if k < len(uploads):
            p.send(t_u, key=uploads[k].key, value=uploads[k].value)
        if k < len(interactions):
            p.send(t_i, key=interactions[k].key, value=interactions[k].value)
    for s in closing:
        p.send(t_i, key=s.key, value=s.value)
    p.flush(60)
    p.close()
    interactions += closing

    # Valid events: applied once (n_events counts distinct event ids), the last list from the last event.
    valid = [s for s in interactions if s.stage is None]
    distinct: dict[str, set[str]] = {}
    for s in valid:
        distinct.setdefault(s.user, set()).add(s.event_id)
    last = {s.user: s.event_id for s in closing}
    last.update({s.user: s.event_id for s in valid if s.category == "valid_new_user"})
    interaction_ids = {s.event_id for s in valid}

    def lists(rs):
        out: dict[str, str] = {}
        for r in rs:
            if (rec := rec_of(r)) is not None:
                if rec.source_event_id in interaction_ids:  # skip fan-out refreshes triggered by uploads
                    out[rec.user_id] = rec.source_event_id
        return out

    got = poll_until(recs, lambda rs: lists(rs) == last, 120, worker)
    assert lists(got) == last
    want = {u: len(ids) for u, ids in distinct.items()}
    n_events = changelog_n_events(worker, set(want), want)
    assert n_events == want, {u: (n_events.get(u), n) for u, n in want.items() if n_events.get(u) != n}

    # Invalid ones: each in the dead-letter topic once, exact bytes, the right stage and a useful error.
    n_bad_i = sum(1 for s in interactions if s.stage)
    n_bad_u = sum(1 for s in uploads if s.stage)
    hashes_i = {hashlib.sha256(s.value).hexdigest() for s in interactions}
    hashes_u = {hashlib.sha256(s.value).hexdigest() for s in uploads}

    def mine(hashes):
        return lambda rs: sum(dl_of(r).original_sha256 in hashes for r in rs)

    letters_i = drain(idlq, lambda rs: mine(hashes_i)(rs) >= n_bad_i, 120, worker)
    check_dead_letters(letters_i, interactions)
    letters_u = drain(udlq, lambda rs: mine(hashes_u)(rs) >= n_bad_u, 120, worker)
    check_dead_letters(letters_u, uploads)

    # Valid uploads (duplicates and the exactly-1-MiB one included) are in Milvus, text only.
    ids = sorted({s.item_id for s in uploads if s.stage is None})
    rows = wait_items(worker, ids, 60, fields=("item_id", "modalities"))
    assert sorted(r["item_id"] for r in rows) == ids
    assert {r["modalities"] for r in rows} == {"text"}
    assert worker.alive(), worker.tail()
    for c in (recs, idlq, udlq):
        c.close()


def test_media_uris_outside_the_policy_are_dead_lettered_at_the_media_stage(worker, catalogue, media):
    root, port, canary = media["root"], media["port"], media["canary_port"]
    ups_root = "/.." * len(root.parts) + "/etc/passwd"  # as many '..' as it takes to reach /
    bad = {  # item id -> (video uri, what the reason must say)
        "m-traversal": (f"file://{root}{ups_root}", "outside the allowed media roots"),
        "m-dotdot-root": (f"file://{root}/../{media['outside'].name}/ok.mp4", "outside the allowed media roots"),
        "m-symlink": ((root / "escape.mp4").as_uri(), "outside the allowed media roots"),
        "m-symlink-dir": (f"file://{root}/escape-dir/ok.mp4", "outside the allowed media roots"),
        "m-etc": ("file:///etc/passwd", "outside the allowed media roots"),
        "m-remote-file": (f"file://otherhost{root}/ok.mp4", "remote host"),
        "m-bare": (f"{root}/ok.mp4", "bare paths are not accepted"),
        "m-ftp": (f"ftp://127.0.0.1:{port}/ok.mp4", "scheme 'ftp' is not allowed"),
        "m-data": ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "scheme 'data' is not allowed"),
        "m-gopher": (f"gopher://127.0.0.1:{port}/ok.mp4", "scheme 'gopher' is not allowed"),
        "m-s3": ("s3://bucket/ok.mp4", "scheme 's3' is not allowed"),
        "m-host": ("http://example.invalid/x.mp4", "host 'example.invalid' is not in the allowed media hosts"),
        "m-https-host": ("https://example.invalid/x.mp4", "host 'example.invalid' is not in the allowed"),
        "m-other-port": (f"http://127.0.0.1:{canary}/ok.mp4", "host '127.0.0.1' is not in the allowed media hosts"),
        "m-localhost": (f"http://localhost:{port}/ok.mp4", "host 'localhost' is not in the allowed media hosts"),
        "m-credentials": (f"http://user:pw@127.0.0.1:{port}/ok.mp4", "credentials in the URI are not allowed"),
        "m-redirect": (f"http://127.0.0.1:{port}/redirect", "redirect to another host refused"),
        "m-404": (f"http://127.0.0.1:{port}/nothing-here.mp4", "HTTP 404"),
        "m-http-too-big": (f"http://127.0.0.1:{port}/big.mp4", f"limit is {MEDIA_MAX_BYTES}"),
        "m-too-big": ((root / "big.mp4").as_uri(), f"limit is {MEDIA_MAX_BYTES}"),
        "m-truncated": ((root / "truncated.mp4").as_uri(), "cannot open"),
        "m-missing": ((root / "no-such.mp4").as_uri(), "file not found"),
        "m-directory": ((root / "a-directory.mp4").as_uri(), "not a regular file"),
    }
    good = {"m-ok-file": (root / "ok.mp4").as_uri(), "m-ok-http": f"http://127.0.0.1:{port}/ok.mp4"}

    def upload(item_id, uri, audio=True):
        return {"event_id": f"{item_id}-{uuid.uuid4().hex[:6]}", "item_id": item_id, "creator_id": "media",
                "title": f"clip {item_id}", "created_at": NOW - 60, "video_uri": uri,
                **({"audio_uri": uri} if audio else {})}

    records = [upload(i, u) for i, u in good.items()] + [upload(i, u) for i, (u, _) in bad.items()]
    random.Random(7).shuffle(records)
    sent = {orjson.dumps(r): r["item_id"] for r in records}
    dlq = worker.consumer("uploads_dlq")
    worker.produce("uploads", [(item.encode(), value) for value, item in sent.items()], raw=True)

    rows = wait_items(worker, list(good), 90, fields=("item_id", "modalities"))
    assert {r["item_id"]: r["modalities"] for r in rows} == {i: "text,audio,video" for i in good}, worker.tail()

    def ours(rs):
        return {sent[o]: dl_of(r) for r in rs if (o := dl_of(r).original_bytes()) in sent}

    letters = ours(drain(dlq, lambda rs: len(ours(rs)) >= len(bad), 90, worker))
    assert set(letters) == set(bad), f"missing: {set(bad) - set(letters)}, unexpected: {set(letters) - set(bad)}"
    problems = {i: (dl.stage, dl.error) for i, dl in letters.items()
                if dl.stage != "media" or bad[i][1] not in dl.error}
    assert not problems, problems
    # Hosts and ports outside the allow-list were never contacted.
    assert media["canary_seen"] == []
    assert all(host == f"127.0.0.1:{port}" for _, host in media["seen"]), media["seen"]
    assert {path for path, _ in media["seen"]} >= {"/ok.mp4", "/big.mp4", "/redirect", "/nothing-here.mp4"}
    assert worker.alive(), worker.tail()
    dlq.close()


def test_upload_with_nothing_to_encode_is_not_an_encoder_failure(worker, catalogue):
    """An upload with no text and no media is rejected at ``validate``, not blamed on the encoder."""
    ups = [{"event_id": f"blank-{k}", "item_id": f"blank-{k}", "creator_id": "c", "title": title,
            "created_at": NOW - 60, **extra}
           for k, (title, extra) in enumerate([("", {}), ("  ", {"description": " ", "tags": []})])]
    sent = {orjson.dumps(u): u["item_id"] for u in ups}
    dlq = worker.consumer("uploads_dlq")
    worker.produce("uploads", [(item.encode(), value) for value, item in sent.items()], raw=True)
    stored: set = set()
    letters: dict = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(stored) + len(letters) < len(ups):
        for recs in dlq.poll(timeout_ms=300).values():
            letters.update({sent[o]: dl_of(r) for r in recs if (o := dl_of(r).original_bytes()) in sent})
        stored = {r["item_id"] for r in wait_items(worker, list(sent.values()), 0)}
    dlq.close()
    assert worker.alive(), worker.tail()
    assert len(stored) + len(letters) == len(ups), (stored, letters)
    assert {i: dl.stage for i, dl in letters.items() if dl.stage != "validate"} == {}, \
        {i: (dl.stage, dl.error) for i, dl in letters.items()}


def test_quote_and_backslash_ids_do_not_stall_the_worker(stack, tmp_path):
    """Ids with an apostrophe or a backslash are rejected at validation (Milvus cannot store them as primary
    keys: it builds key expressions without escaping); they must never stop the stream."""
    unique = "poison" + uuid.uuid4().hex[:8]
    w = WorkerProcess(worker_env(unique), tmp_path / "worker.log")
    w.start()
    try:
        w.produce("uploads", [{"event_id": "p-1", "item_id": "p-ok", "creator_id": "c", "title": "pasta",
                               "created_at": NOW - 60}])
        assert wait_items(w, ["p-ok"], 60)
        recs = w.consumer("recommendations")
        w.produce("interactions", [
            {"event_id": "p-e1", "user_id": "o'brien", "item_id": "p-ok", "type": "like", "ts": NOW},  # user '
            {"event_id": "p-e2", "user_id": "plain-1", "item_id": "ghost\\", "type": "like", "ts": NOW},  # item \
        ])
        w.produce("uploads", [{"event_id": "p-2", "item_id": "it's", "creator_id": "c", "title": "quote",
                               "created_at": NOW - 60}])
        time.sleep(2)  # the poison is taken first
        w.produce("interactions", [{"event_id": "p-e3", "user_id": "plain-2", "item_id": "p-ok", "type": "like",
                                    "ts": NOW}])
        w.produce("uploads", [{"event_id": "p-3", "item_id": "p-after", "creator_id": "c", "title": "bread",
                               "created_at": NOW - 60}])
        # Both agents get 15 s for a plain event sent after the poison (each takes well under a second).
        done = {"interactions": False, "uploads": False}
        got: list = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(done.values()):
            for batch in recs.poll(timeout_ms=500).values():
                got.extend(batch)
            done["interactions"] = any((x := rec_of(r)) and x.source_event_id == "p-e3" for r in got)
            done["uploads"] = bool(wait_items(w, ["p-after"], 0))
        stalled = [agent for agent, ok in done.items() if not ok]
        log = [line for line in w.tail(200).splitlines() if "retry" in line][-4:]
        recs.close()
        assert not stalled, f"agents stalled: {stalled}\n" + "\n".join(log)
    finally:
        w.kill9()
        w.drop_collections()
