"""A replayable log for the offline evaluation, read through :mod:`streams.replay`.

The evaluation replays exactly the events ``avrec events replay`` would produce
(same readers, same MovieLens mapping, same ordering), decoded once into plain
Python tuples so the replay loop does no JSON work per event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from streams.replay import INTERACTIONS, UPLOADS, open_replay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemMeta:
    """What an upload record says about an item (all the evaluation needs)."""

    item_id: str
    creator_id: str
    title: str
    description: str
    tags: tuple[str, ...]
    created_at: float
    duration_s: float | None = None


class Upload(NamedTuple):
    item: int  # index into EvalLog.items


class Event(NamedTuple):
    """One interaction, as the worker decodes it."""

    event_id: str
    user_id: str
    item: int  # index into EvalLog.items
    type: str
    watch_ms: int | None
    ts: float


@dataclass
class EvalLog:
    """Items, and uploads + interactions in replay order."""

    name: str
    layout: str
    items: list[ItemMeta]
    index: dict[str, int]
    stream: list[Upload | Event] = field(repr=False)
    n_interactions: int
    skipped: dict[str, int] = field(default_factory=dict)
    # With load_log(keep_raw=True): each stream entry's Kafka (key, value) exactly as
    # `avrec replay` would send it (live mode publishes these).
    raw: list[tuple[bytes, bytes]] | None = field(default=None, repr=False)

    @property
    def interactions(self) -> list[Event]:
        return [e for e in self.stream if isinstance(e, Event)]


def load_log(path: str | Path, limit: int | None = None, id_prefix: str = "ml", keep_raw: bool = False) -> EvalLog:
    """Read a dataset directory (ml-100k, ml-latest or JSONL layout) into an :class:`EvalLog`.

    ``limit`` keeps only the first ``limit`` interactions (and the uploads before
    them): a time-ordered prefix, for smoke tests.
    """
    replay = open_replay(path, id_prefix=id_prefix)
    items: list[ItemMeta] = []
    index: dict[str, int] = {}
    stream: list[Upload | Event] = []
    skipped: dict[str, int] = dict(replay.skipped)
    n_int = 0
    raw: list[tuple[bytes, bytes]] | None = [] if keep_raw else None
    for _, kind, key, value in replay.timed():
        rec = orjson.loads(value)  # already validated by the replay reader
        if kind == UPLOADS:
            iid = rec["item_id"]
            if iid in index:  # a re-upload (JSONL) replaces the metadata, as an upsert does live
                j = index[iid]
            else:
                j = index[iid] = len(items)
                items.append(None)  # type: ignore[arg-type]
            items[j] = ItemMeta(
                item_id=iid,
                creator_id=rec["creator_id"],
                title=rec["title"],
                description=rec.get("description") or "",
                tags=tuple(rec.get("tags") or ()),
                created_at=float(rec["created_at"]),
                duration_s=rec.get("duration_s"),
            )
            stream.append(Upload(j))
            if raw is not None:
                raw.append((key, value))
        elif kind == INTERACTIONS:
            if limit is not None and n_int >= limit:
                break
            j = index.get(rec["item_id"])
            if j is None:  # the worker dead-letters interactions with items it does not know
                skipped["interaction with an unknown item"] = skipped.get("interaction with an unknown item", 0) + 1
                continue
            stream.append(Event(rec["event_id"], rec["user_id"], j, rec["type"], rec.get("watch_ms"),
                                float(rec["ts"])))
            if raw is not None:
                raw.append((key, value))
            n_int += 1
    name = Path(path).name
    log.info("%s: %d items, %d interactions%s", name, len(items), n_int,
             f" (first {limit})" if limit is not None else "")
    return EvalLog(name, replay.layout, items, index, stream, n_int, skipped, raw)


def select_users(elog: EvalLog, n_users: int, seed: int = 0) -> EvalLog:
    """The log restricted to the interactions of ``n_users`` users drawn at random (``seed``).

    Every upload is kept, in place, so the catalogue and when each item becomes
    available are those of the full log; only other users' interactions go.
    """
    users = sorted({e.user_id for e in elog.stream if isinstance(e, Event)})
    if n_users >= len(users):
        return elog
    rng = np.random.default_rng(seed)
    chosen = {users[i] for i in rng.choice(len(users), size=n_users, replace=False)}
    keep = [k for k, e in enumerate(elog.stream) if isinstance(e, Upload) or e.user_id in chosen]
    stream = [elog.stream[k] for k in keep]
    raw = [elog.raw[k] for k in keep] if elog.raw is not None else None
    n_int = sum(1 for e in stream if isinstance(e, Event))
    log.info("%d of %d users: %d interactions", n_users, len(users), n_int)
    return EvalLog(elog.name, elog.layout, elog.items, elog.index, stream, n_int, dict(elog.skipped), raw)
