"""Checking the read API's inputs: ids, query parameters and the feedback body (pure functions).

Each check raises :class:`BadRequest` with a reason a client can act on; the views turn it into
``400`` (or ``status``) ``{"error": reason, "details": [...]}``. Ids follow the event records'
rules (``streams/records.py``), so any id the API accepts could have come from an event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from streams.records import Id, Interaction, RecordError, validate

_ID = TypeAdapter(Id)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
#: The most interactions one ``POST /feedback`` may carry, and the largest body it reads.
MAX_FEEDBACK_EVENTS = 1000
MAX_FEEDBACK_BYTES = 1024 * 1024


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400, details: list | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.details = reason, status, details

    def body(self) -> dict:
        out: dict[str, Any] = {"error": self.reason}
        if self.details is not None:
            out["details"] = self.details
        return out


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid user/item id (the records' rules), else BadRequest naming the rule."""
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        msg = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise BadRequest(f"invalid {what} {value[:40]!r}: {msg}") from None


def int_param(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi]."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def bool_param(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, got {raw[:40]!r}")


def exclude_param(values: Sequence[str], limit: int) -> frozenset[str]:
    """``exclude`` given comma-separated, repeated, or both; each id checked; at most ``limit`` ids."""
    ids = [i.strip() for v in values for i in v.split(",") if i.strip()]
    if len(ids) > limit:
        raise BadRequest(f"exclude names {len(ids)} items; the limit is {limit}")
    return frozenset(check_id(i, "item id in exclude") for i in ids)


def page_params(query: Mapping[str, str], max_n: int) -> tuple[int, int]:
    """``(n, offset)`` with ``n + offset <= max_n`` (``settings.web.api_max_n``)."""
    n = int_param(query, "n", 10, 1, max_n)
    offset = int_param(query, "offset", 0, 0, max_n - 1)
    if n + offset > max_n:
        raise BadRequest(f"n + offset must be at most {max_n} (settings.web.api_max_n), got {n + offset}")
    return n, offset


def feedback_records(body: bytes, now: float | None = None) -> list[Interaction]:
    """The interactions in a ``POST /feedback`` body, validated as ``avrec produce interactions`` does.

    One object or a list of them. All or nothing: any invalid record rejects the body (422, every
    error listed with its index), so a client can fix and resend it without duplicates.
    """
    if len(body) > MAX_FEEDBACK_BYTES:
        raise BadRequest(f"the body is {len(body)} bytes; the limit is {MAX_FEEDBACK_BYTES}", 413)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", details=[{"stage": "decode", "reason": str(exc)}]) \
            from None
    objs = data if isinstance(data, list) else [data]
    if not objs:
        raise BadRequest("the body is an empty list: send one interaction or a list of them")
    if len(objs) > MAX_FEEDBACK_EVENTS:
        raise BadRequest(f"the body holds {len(objs)} interactions; the limit is {MAX_FEEDBACK_EVENTS}", 413)
    records, details = [], []
    for n, obj in enumerate(objs):
        try:
            if not isinstance(obj, dict):
                raise RecordError("decode", f"payload must be a JSON object, got {type(obj).__name__}")
            records.append(validate(Interaction, obj, now=now))
        except RecordError as exc:
            details.append({"index": n, "stage": exc.stage, "reason": exc.reason, "fields": exc.fields})
    if details:
        status = 400 if all(d["stage"] == "decode" for d in details) else 422
        raise BadRequest(f"{len(details)} of {len(objs)} interaction(s) are invalid; nothing was sent "
                         "(docs/EVENTS.md has the format)", status, details)
    return records
