"""Every event record avrec reads or writes, in one place.

Records are pydantic v2 models, decoded from and encoded to JSON with orjson.
The schema contract (fields, limits, keys, topics, dead letters and the
at-least-once + ``event_id`` dedupe rule) is written up in ``docs/EVENTS.md``;
keep the two in step.

Decoding is strict about types and lenient about extra fields:

* unknown fields are ignored, so producers may add fields before consumers know
  them (forward compatibility);
* a value of the wrong JSON type is rejected, never coerced (a list is not a
  string, ``"12"`` is not a number, ``true`` is not a number); an integer is fine
  where a float is expected;
* NaN and infinities are rejected (orjson refuses them in JSON; the models refuse
  them when built from Python);
* timestamps are unix seconds, or ISO-8601 strings converted to unix seconds
  (naive ones are read as UTC); they must be finite, > 0 and at most
  :data:`MAX_FUTURE_S` ahead of now (pass ``max_future_s=`` to the decoders to
  change it per call).

A payload that cannot be used raises :class:`RecordError` with ``stage``
``"decode"`` (too big, not UTF-8, not JSON, not an object) or ``"validate"``
(schema violation); ``reason`` names the field.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
import unicodedata
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streams.exceptions import AvrecError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- limits

#: Raw payloads above this many bytes are rejected before parsing.
MAX_RECORD_BYTES = 1024 * 1024
#: How far ahead of "now" a timestamp may lie (clock skew allowance), in seconds.
MAX_FUTURE_S = 24 * 3600.0
MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 1000
MAX_DESCRIPTION_CHARS = 5000
MAX_TAGS = 50
MAX_TAG_CHARS = 64
MAX_DURATION_S = 24 * 3600.0
MAX_REASON_CHARS = 1000
MAX_RECOMMENDED_ITEMS = 1000
MAX_REASONS_PER_ITEM = 16
#: Items one impression may list (a shown list is a screenful or a page, not a catalogue).
MAX_IMPRESSION_ITEMS = 200
#: Dead letters keep at most this many original bytes (a Kafka record is 1 MiB by
#: default and base64 grows data by 4/3); larger originals are cut and flagged.
MAX_DLQ_ORIGINAL_BYTES = 512 * 1024
MAX_DLQ_ERROR_CHARS = 4000

#: Stages a dead letter may name (open set: any short string is accepted).
DLQ_STAGES = ("decode", "validate", "key", "partition", "media", "encode", "unknown_item", "internal")

INTERACTION_TYPES = ("view", "like", "share", "comment", "complete", "skip", "dislike", "hide")
InteractionType = Literal["view", "like", "share", "comment", "complete", "skip", "dislike", "hide"]
ControlAction = Literal["takedown", "forget_user"]


class RecordError(AvrecError):
    """A payload is not a valid record.

    ``stage`` is ``"decode"`` (too big, not UTF-8, not JSON, not an object) or
    ``"validate"`` (a schema rule failed); ``reason`` says what is wrong and names
    the field; ``fields`` lists the offending field paths (``"items.0.score"``).
    """

    def __init__(self, stage: str, reason: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.fields = fields or []


# ---------------------------------------------------------------- field types


_ID_FORBIDDEN = frozenset("'\\")


def _check_id(v: str) -> str:
    if not v.strip():
        raise ValueError("must be a non-empty string")
    if len(v) > MAX_ID_CHARS:
        raise ValueError(f"must be at most {MAX_ID_CHARS} characters (got {len(v)})")
    # Printable ASCII (the usual id) holds no control character: skip the per-character lookup.
    if not (v.isascii() and v.isprintable()) and any(unicodedata.category(c) == "Cc" for c in v):
        raise ValueError("must not contain control characters")
    if any(c in _ID_FORBIDDEN for c in v):
        # Milvus builds primary-key expressions as '<id>' without escaping (upsert, get and
        # delete by id all fail on these), so such an id could never be stored.
        raise ValueError("must not contain an apostrophe or a backslash (' \\)")
    return v


def _max_chars(limit: int):
    def check(v: str) -> str:
        if len(v) > limit:
            raise ValueError(f"must be at most {limit} characters (got {len(v)})")
        return v

    return check


def _check_tags(v: list[str]) -> list[str]:
    if len(v) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags allowed (got {len(v)})")
    for i, tag in enumerate(v):
        if not tag.strip():
            raise ValueError(f"tag {i} is empty")
        if len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"tag {i} must be at most {MAX_TAG_CHARS} characters (got {len(tag)})")
    return v


def _parse_ts(v: Any) -> Any:
    """ISO-8601 strings become unix seconds; every other type goes to the strict float check."""
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"must be unix seconds or an ISO-8601 string (got {v[:40]!r})") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return v


def _check_ts(v: float, info: ValidationInfo) -> float:
    ctx = info.context or {}
    return _check_unix_s(v, ctx.get("max_future_s", MAX_FUTURE_S), ctx.get("now"))


def _check_unix_s(v: float, max_future: float | None = MAX_FUTURE_S, now: float | None = None) -> float:
    """A timestamp's rules: finite, > 0, at most ``max_future`` seconds after ``now`` (None: no bound)."""
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    if v <= 0:
        raise ValueError(f"must be > 0 unix seconds (got {v})")
    if max_future is not None:
        now = time.time() if now is None else now
        if v > now + max_future:
            raise ValueError(
                f"future timestamp: {v:.0f} is {v - now:.0f}s ahead of now (at most {max_future:.0f}s allowed)"
            )
    return v


def _check_duration(v: float) -> float:
    if not math.isfinite(v) or v < 0 or v > MAX_DURATION_S:
        raise ValueError(f"must be a finite number of seconds in [0, {MAX_DURATION_S:.0f}] (got {v})")
    return v


Id = Annotated[str, AfterValidator(_check_id)]
Timestamp = Annotated[float, BeforeValidator(_parse_ts), AfterValidator(_check_ts)]
Title = Annotated[str, AfterValidator(_max_chars(MAX_TITLE_CHARS))]
Description = Annotated[str, AfterValidator(_max_chars(MAX_DESCRIPTION_CHARS))]
Reason = Annotated[str, AfterValidator(_max_chars(MAX_REASON_CHARS))]
Tags = Annotated[list[str], AfterValidator(_check_tags)]
Uri = Annotated[str, AfterValidator(_max_chars(4096))]


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)

    def kafka_key(self) -> bytes | None:
        """The Kafka key this record is produced with (UTF-8), or None."""
        return None


# ---------------------------------------------------------------- records


class Upload(_Record):
    """A new item (topic ``uploads``, key ``item_id``)."""

    event_id: Id
    item_id: Id
    creator_id: Id
    title: Title
    description: Description = ""
    tags: Tags = Field(default_factory=list)
    audio_uri: Uri | None = None
    video_uri: Uri | None = None
    thumbnail_uri: Uri | None = None
    duration_s: Annotated[float, AfterValidator(_check_duration)] | None = None
    created_at: Timestamp

    @model_validator(mode="after")
    def _has_content(self) -> "Upload":
        # An item is understood by its text or its media; with neither there is nothing to encode.
        has_text = bool(self.title.strip() or self.description.strip() or any(t.strip() for t in self.tags))
        if not has_text and not self.audio_uri and not self.video_uri:
            raise ValueError("title: an upload needs a title, description, tags or an audio/video URI")
        return self

    def kafka_key(self) -> bytes:
        return self.item_id.encode()


class Interaction(_Record):
    """A user's action on an item (topic ``interactions``, key ``user_id``)."""

    event_id: Id
    user_id: Id
    item_id: Id
    type: InteractionType
    watch_ms: Annotated[int, Field(ge=0)] | None = None
    ts: Timestamp

    def kafka_key(self) -> bytes:
        return self.user_id.encode()


def _check_shown_items(v: list[str]) -> list[str]:
    # Clicks are attributed once per shown item: a list that shows an item twice is a producer bug.
    seen: set[str] = set()
    for i, item in enumerate(v):
        if item in seen:
            raise ValueError(f"item {i} ({item!r}) appears twice; list each shown item once")
        seen.add(item)
    return v


class Impression(_Record):
    """A list a user was shown (topic ``impressions``, key ``user_id``, co-partitioned with interactions)."""

    event_id: Id
    user_id: Id
    items: Annotated[list[Id], Field(min_length=1, max_length=MAX_IMPRESSION_ITEMS),
                     AfterValidator(_check_shown_items)]
    model_version: Id
    list_event_id: Id | None = None  # the shown list's source_event_id
    ts: Timestamp

    def kafka_key(self) -> bytes:
        return self.user_id.encode()


class Control(_Record):
    """An operator command (topic ``control``, key ``item_id`` for takedowns, ``user_id`` for forget_user)."""

    event_id: Id
    action: ControlAction
    item_id: Id | None = Field(default=None, validate_default=True)
    user_id: Id | None = Field(default=None, validate_default=True)
    ts: Timestamp
    reason: Reason | None = None

    @field_validator("item_id", "user_id", mode="after")
    @classmethod
    def _target(cls, v: str | None, info: ValidationInfo) -> str | None:
        needs = {"takedown": "item_id", "forget_user": "user_id"}.get(info.data.get("action", ""))
        if v is None and needs == info.field_name:
            raise ValueError(f"is required for action {info.data['action']!r}")
        return v

    def kafka_key(self) -> bytes:
        target = self.item_id if self.action == "takedown" else self.user_id
        assert target is not None  # guaranteed by _target
        return target.encode()


class RecommendedItem(_Record):
    item_id: Id
    score: float
    reasons: Annotated[list[Reason], Field(max_length=MAX_REASONS_PER_ITEM)] = Field(default_factory=list)


class Recommendation(_Record):
    """A user's current top-K list (topic ``recommendations``, compacted, key ``user_id``)."""

    user_id: Id
    items: Annotated[list[RecommendedItem], Field(max_length=MAX_RECOMMENDED_ITEMS)]
    model_version: Id
    source_event_id: Id
    event_ts: Timestamp
    produced_at: Timestamp

    def kafka_key(self) -> bytes:
        return self.user_id.encode()


class DeadLetter(_Record):
    """A record that could not be processed (topics ``*.dlq``).

    ``key`` and ``original`` are standard base64 of the exact bytes read (Kafka
    keys and values are bytes and need not be UTF-8), so a dead letter can be
    re-driven byte for byte. Originals above :data:`MAX_DLQ_ORIGINAL_BYTES` are
    cut to that size and flagged with ``original_truncated``; ``original_size``
    and ``original_sha256`` always describe the full original.
    """

    stage: Annotated[str, AfterValidator(_check_id)]
    error: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    original: str
    original_size: int = 0
    original_sha256: str = ""
    original_truncated: bool = False
    failed_at: Timestamp

    def key_bytes(self) -> bytes | None:
        return None if self.key is None else base64.b64decode(self.key)

    def original_bytes(self) -> bytes:
        return base64.b64decode(self.original)


R = TypeVar("R", bound=_Record)

#: Topic kind (an attribute of ``settings.kafka.topics``) -> record class.
RECORD_TYPES: dict[str, type[_Record]] = {
    "uploads": Upload,
    "interactions": Interaction,
    "control": Control,
    "recommendations": Recommendation,
    "impressions": Impression,
}


# ---------------------------------------------------------------- decode / encode


def _format_errors(exc: ValidationError) -> tuple[str, list[str]]:
    parts, fields = [], []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "record"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "missing":
            msg = "is required"
        parts.append(f"{field}: {msg}")
        fields.append(field)
    return "; ".join(parts), fields


def parse_json(raw: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Size-check, UTF-8-check and parse one payload into a JSON object, or raise ``RecordError("decode")``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("decode", f"payload is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES} (1 MiB)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError("decode", f"payload is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError("decode", f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("decode", f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def validate(
    cls: type[R], obj: dict[str, Any], *, max_future_s: float | None = MAX_FUTURE_S, now: float | None = None
) -> R:
    """Validate an already-parsed object; raise ``RecordError("validate")`` naming the fields."""
    try:
        return cls.model_validate(obj, context={"max_future_s": max_future_s, "now": now})
    except ValidationError as exc:
        reason, fields = _format_errors(exc)
        raise RecordError("validate", f"{cls.__name__}: {reason}", fields) from None


def decode(
    cls: type[R], raw: bytes, *, max_future_s: float | None = MAX_FUTURE_S, now: float | None = None
) -> R:
    """Decode raw bytes into ``cls``. ``max_future_s=None`` disables the future-timestamp check."""
    return validate(cls, parse_json(raw), max_future_s=max_future_s, now=now)


def decode_kind(kind: str, raw: bytes, **kw: Any) -> _Record:
    """Decode by topic kind: ``uploads``, ``interactions``, ``control``, ``recommendations`` or ``impressions``."""
    try:
        cls = RECORD_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(RECORD_TYPES)}") from None
    return decode(cls, raw, **kw)


def decode_upload(raw: bytes, **kw: Any) -> Upload:
    return decode(Upload, raw, **kw)


def decode_interaction(raw: bytes, **kw: Any) -> Interaction:
    return decode(Interaction, raw, **kw)


def decode_impression(raw: bytes, **kw: Any) -> Impression:
    return decode(Impression, raw, **kw)


def decode_control(raw: bytes, **kw: Any) -> Control:
    return decode(Control, raw, **kw)


def decode_recommendation(raw: bytes, **kw: Any) -> Recommendation:
    return decode(Recommendation, raw, **kw)


def decode_dead_letter(raw: bytes, **kw: Any) -> DeadLetter:
    kw.setdefault("max_future_s", None)
    return decode(DeadLetter, raw, **kw)


def encode(record: BaseModel) -> bytes:
    """The record as compact UTF-8 JSON (timestamps as unix seconds, ``None`` as ``null``)."""
    return orjson.dumps(record.model_dump(mode="json"))


def encode_list(user_id: str, items: Sequence[tuple[str, float, list[str]]], model_version: str,
                source_event_id: str, event_ts: float, produced_at: float) -> bytes:
    """A :class:`Recommendation` of ``items`` ((item_id, score, reasons) each), encoded: the bytes
    ``encode(Recommendation(...))`` gives for the same fields, after the same checks (a ValueError
    where the model would refuse them), without building the models.

    The worker publishes a list per user per batch; building and dumping the 21 models of a list
    was ~0.2 ms of it (docs/PERFORMANCE.md, "Publishing"). tests/unit/test_records.py holds the two
    paths to the same bytes and the same refusals.
    """
    for name, value in (("user_id", user_id), ("model_version", model_version),
                        ("source_event_id", source_event_id)):
        _checked_id(name, value)
    if len(items) > MAX_RECOMMENDED_ITEMS:
        raise ValueError(f"items: at most {MAX_RECOMMENDED_ITEMS} allowed (got {len(items)})")
    out = []
    for n, (item_id, score, reasons) in enumerate(items):
        _checked_id(f"items.{n}.item_id", item_id)
        if not isinstance(score, (float, int)) or isinstance(score, bool) or not math.isfinite(score):
            raise ValueError(f"items.{n}.score: must be a finite number (got {score!r})")
        if len(reasons) > MAX_REASONS_PER_ITEM:
            raise ValueError(f"items.{n}.reasons: at most {MAX_REASONS_PER_ITEM} allowed (got {len(reasons)})")
        for reason in reasons:
            if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
                raise ValueError(f"items.{n}.reasons: each a string of at most {MAX_REASON_CHARS} characters")
        out.append({"item_id": item_id, "score": float(score), "reasons": list(reasons)})
    for name, ts in (("event_ts", event_ts), ("produced_at", produced_at)):
        if not isinstance(ts, (float, int)) or isinstance(ts, bool):
            raise ValueError(f"{name}: must be unix seconds (got {ts!r})")
        _checked(name, ts, _check_unix_s)  # the model's Timestamp rules, default context
    return orjson.dumps({"user_id": user_id, "items": out, "model_version": model_version,
                         "source_event_id": source_event_id, "event_ts": float(event_ts),
                         "produced_at": float(produced_at)})


def _checked_id(name: str, value: Any) -> None:
    """An ``Id`` field's rules (strict: a str, then ``_check_id``), errors prefixed with ``name``."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string (got {type(value).__name__})")
    _checked(name, value, _check_id)


def _checked(name: str, value: Any, check) -> None:
    """``check(value)``, its ValueError prefixed with the field's ``name``."""
    try:
        check(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


# ---------------------------------------------------------------- helpers


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    error: Exception | str,
    stage: str,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    failed_at: float | None = None,
) -> DeadLetter:
    """Wrap a record that failed at ``stage`` so it can go to a ``*.dlq`` topic, original bytes intact."""
    raw = bytes(raw or b"")
    if isinstance(error, RecordError):
        message = error.reason
    elif isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
    else:
        message = str(error)
    if len(message) > MAX_DLQ_ERROR_CHARS:
        message = message[: MAX_DLQ_ERROR_CHARS - 1] + "…"
    kept = raw[:MAX_DLQ_ORIGINAL_BYTES]
    if len(kept) < len(raw):
        log.warning("dead letter from %s[%s]@%s keeps %d of %d bytes", topic, partition, offset, len(kept), len(raw))
    return DeadLetter.model_validate(
        {
            "stage": stage,
            "error": message,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": None if key is None else base64.b64encode(bytes(key)).decode("ascii"),
            "original": base64.b64encode(kept).decode("ascii"),
            "original_size": len(raw),
            "original_sha256": hashlib.sha256(raw).hexdigest(),
            "original_truncated": len(kept) < len(raw),
            "failed_at": time.time() if failed_at is None else failed_at,
        },
        context={"max_future_s": None},
    )


def watch_ratio(interaction: Interaction, duration_s: float | None) -> float | None:
    """Fraction of the item watched, in [0, 1]; None when unknown.

    None when the interaction has no ``watch_ms`` or the duration is missing,
    non-finite or <= 0. Watch time beyond the duration (looping, rewatching)
    counts as 1.0.
    """
    if interaction.watch_ms is None or duration_s is None:
        return None
    if not math.isfinite(duration_s) or duration_s <= 0:
        return None
    return min(1.0, max(0.0, interaction.watch_ms / 1000.0 / duration_s))


__all__ = [
    "DLQ_STAGES",
    "INTERACTION_TYPES",
    "MAX_IMPRESSION_ITEMS",
    "MAX_FUTURE_S",
    "MAX_RECORD_BYTES",
    "RECORD_TYPES",
    "Control",
    "DeadLetter",
    "Impression",
    "Interaction",
    "RecommendedItem",
    "Recommendation",
    "RecordError",
    "Upload",
    "dead_letter",
    "decode",
    "decode_control",
    "decode_dead_letter",
    "decode_impression",
    "decode_interaction",
    "decode_kind",
    "decode_recommendation",
    "decode_upload",
    "encode",
    "parse_json",
    "validate",
    "watch_ratio",
]
