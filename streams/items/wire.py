"""The records on avrec's internal item topics, and their JSON encoding (orjson).

``<app_id>-item-deltas`` (keyed by item, one partition per item, read by every
worker's replica; retention as the input topics):

* ``ops``: the item ops of one batch of events for the items of one partition,
  each tagged with the event's source (``i<p>``: interactions partition p,
  ``c<p>``: user-commands partition p) and offset, the key of its idempotence;
* ``up``: an upload was indexed in Milvus (version = the upload's event id,
  upload time, creator): fresh window, item-cache invalidation;
* ``down``: an item was taken down;
* ``snap``: the partition's owner has written every row changed up to ``upto``
  into ``item-state``.

``<app_id>-item-commands`` (keyed by item, co-partitioned with item-deltas,
consumed by the partition's owner only):

* ``park``: an interaction that named an item not in the catalogue yet;
* ``uploaded``: the item is in Milvus now (release what is parked for it);
* ``takedown``: remove the item from Milvus, drop what is parked for it;
* ``tick``: the owner's own clock (expire parked interactions, write snapshots).

``<app_id>-item-state`` (compacted, keyed by item): each item's whole state as
of some snapshot, and per partition the ``pos`` record (key ``POS_KEY``) that
says up to which item-deltas offset the partition's rows are written.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from streams.items.exceptions import ItemStateError
from streams.ranking.item_ops import ItemOp

POS_KEY = b"\x00pos"  # ids cannot hold control characters (docs/EVENTS.md), so no item has this key


@dataclass(frozen=True, slots=True)
class SourcedOp:
    """An item op and the event it came from: ``src`` names a partition of a user topic, ``offset`` the event."""

    src: str
    offset: int
    op: ItemOp


# ---------------------------------------------------------------- item-deltas
def encode_ops(ops: Iterable[SourcedOp]) -> bytes:
    return orjson.dumps({"k": "ops", "ops": [
        [s.src, s.offset, s.op.item, s.op.pop, s.op.trend_ts, s.op.trend_w, s.op.pairs] for s in ops]})


def decode_ops(doc: dict[str, Any]) -> list[SourcedOp]:
    return [SourcedOp(src, int(off), ItemOp(item, float(pop), float(tts), float(tw), tuple((j, float(w)) for j, w in pairs)))
            for src, off, item, pop, tts, tw, pairs in doc["ops"]]


def encode_up(item_id: str, version: str, created_at: float, creator_id: str) -> bytes:
    return orjson.dumps({"k": "up", "item": item_id, "version": version, "created_at": created_at,
                         "creator": creator_id})


def encode_down(item_id: str) -> bytes:
    return orjson.dumps({"k": "down", "item": item_id})


def encode_snap(upto: int) -> bytes:
    return orjson.dumps({"k": "snap", "upto": upto})


# ---------------------------------------------------------------- item-commands
def encode_park(raw: bytes, item_id: str, user_id: str, event_id: str, topic: str, partition: int, offset: int,
                parked_at: float) -> bytes:
    return orjson.dumps({"k": "park", "item": item_id, "user": user_id, "event_id": event_id,
                         "raw": base64.b64encode(raw).decode("ascii"), "topic": topic, "partition": partition,
                         "offset": offset, "parked_at": parked_at})


def encode_uploaded(item_id: str) -> bytes:
    return orjson.dumps({"k": "uploaded", "item": item_id})


def encode_takedown(item_id: str, ts: float, reason: str | None) -> bytes:
    return orjson.dumps({"k": "takedown", "item": item_id, "ts": ts, "reason": reason})


def encode_tick(at: float) -> bytes:
    return orjson.dumps({"k": "tick", "at": at})


# ---------------------------------------------------------------- any of them
def decode(raw: bytes) -> dict[str, Any]:
    """One internal record as a dict with its kind under ``"k"``; :class:`ItemStateError` if it is not one."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ItemStateError(f"not an item-state record: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("k"), str):
        raise ItemStateError(f"not an item-state record: {bytes(raw[:80])!r}")
    return doc


def parked_raw(doc: dict[str, Any]) -> bytes:
    """The original interaction bytes of a ``park`` record (or of a ``replay`` command made from one)."""
    return base64.b64decode(doc["raw"])
