"""The item-keyed state as a deterministic state machine over the ``item-deltas`` log.

Every worker applies the same log, partition by partition in offset order, to
its own :class:`ItemStore`, so every worker holds the same co-occurrence rows,
popularity, trending scores, upload metadata and takedowns: a state that
depends only on the log, never on which worker wrote a record or when it was
read. (Rows are per item and an item's records all live in one partition, so
how the partitions interleave does not matter either.)

Idempotence. An op carries the event it came from: ``src`` (a partition of a
user topic) and the event's offset there. Each item remembers, per source, the
highest offset applied to it, and an op at or below that mark is skipped. Each
source partition is processed by one worker at a time, in offset order, and
the worker sends a batch's ops before it writes the users' states, so:

* a worker killed after sending and restarted from its committed offsets sends
  the same ops again (the same states before, the same events) and they are
  skipped;
* an event whose user state was already written (a re-delivery after a kill)
  sends nothing: its ops went out before its state did.

Snapshots. The partition's owner writes the rows changed since its last
snapshot to the compacted ``item-state`` topic, then a ``pos`` record
(``upto``), then a ``snap`` marker into the log; a new worker loads the
snapshots and applies the log after each partition's ``upto``. A row written
later than ``upto`` (a snapshot cut short by a crash) is ahead of it; applying
the log again to it skips what it already holds, by the marks above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streams.items import wire
from streams.items.exceptions import ItemStateError
from streams.ranking import RankingSettings, new_cooccurrence, new_trending
from streams.ranking.item_ops import apply_ops
from streams.services.items import FreshItems

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """What an ``up`` record says about an upload."""

    version: str  # the upload's event id: a re-upload changes it
    created_at: float
    creator_id: str


class ItemStore:
    """Co-occurrence, popularity, trending, uploads and takedowns of every item, from the log.

    ``on_change(item_id, version)`` is called when an upload (``version``) or a
    takedown (``None``) of an item is applied, so caches of the item can be dropped.
    """

    def __init__(self, cfg: RankingSettings, partitions: int,
                 on_change: Callable[[str, str | None], None] | None = None) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.cooc = new_cooccurrence(cfg)  # plain dicts: counts[item] = {neighbour: count}, pops[item]
        self.trending = new_trending(cfg)
        self.fresh = FreshItems(cfg.fresh_window_s)
        self.meta: dict[str, ItemMeta] = {}
        self.down: set[str] = set()
        self.marks: dict[str, dict[str, int]] = {}  # item -> {source: highest event offset applied}
        # Per partition: items changed since the last snapshot -> the log offset of their last change.
        self.dirty: list[dict[str, int]] = [{} for _ in range(partitions)]
        self.position = [0] * partitions  # the next log offset to apply, per partition
        self.snapshot_upto: list[int | None] = [None] * partitions  # from item-state, when loaded
        self.on_change = on_change
        self.ops_applied = self.ops_skipped = 0

    # -- the log ----------------------------------------------------------------------
    def apply(self, partition: int, offset: int, raw: bytes) -> None:
        """Apply the record at ``offset`` of log partition ``partition``."""
        doc = wire.decode(raw)
        kind = doc["k"]
        if kind == "ops":
            self._apply_ops(partition, offset, doc)
        elif kind == "up":
            self._apply_up(partition, offset, doc)
        elif kind == "down":
            self._apply_down(partition, offset, doc["item"])
        elif kind == "snap":
            upto = int(doc["upto"])
            d = self.dirty[partition]
            self.dirty[partition] = {i: at for i, at in d.items() if at > upto}
        else:
            raise ItemStateError(f"unknown item-deltas record kind {kind!r} at {partition}@{offset}")
        self.position[partition] = offset + 1

    def _apply_ops(self, partition: int, offset: int, doc: dict[str, Any]) -> None:
        dirty = self.dirty[partition]
        todo = []
        for s in wire.decode_ops(doc):
            item = s.op.item
            if item in self.down:
                continue  # a taken-down item learns nothing more (its pairs in other rows stay, filtered at read)
            marks = self.marks.get(item)
            if marks is None:
                marks = self.marks[item] = {}
            if s.offset <= marks.get(s.src, -1):
                self.ops_skipped += 1
                continue
            todo.append(s.op)
            marks[s.src] = s.offset
            dirty[item] = offset
        # One record holds a whole batch's ops: each touched row is copied once for all of them.
        apply_ops(todo, self.cooc, self.trending)
        self.ops_applied += len(todo)

    def _apply_up(self, partition: int, offset: int, doc: dict[str, Any]) -> None:
        item = doc["item"]
        if item in self.down:
            return
        meta = ItemMeta(str(doc["version"]), float(doc["created_at"]), str(doc.get("creator") or ""))
        self.meta[item] = meta
        self.fresh.add(item, meta.created_at)
        self.dirty[partition][item] = offset
        if self.on_change is not None:
            self.on_change(item, meta.version)

    def _apply_down(self, partition: int, offset: int, item: str) -> None:
        self.down.add(item)
        self.cooc.counts.pop(item, None)
        self.cooc.pops.pop(item, None)
        self.trending.remove(item)
        self.fresh.remove(item)
        self.dirty[partition][item] = offset
        if self.on_change is not None:
            self.on_change(item, None)

    # -- snapshots ----------------------------------------------------------------------
    def item_record(self, item: str) -> bytes:
        """The item's whole state, as the owner writes it to ``item-state``."""
        meta = self.meta.get(item)
        return orjson.dumps({
            "row": self.cooc.counts.get(item), "pop": self.cooc.pops.get(item), "lg": self.trending.lg_of(item),
            "marks": self.marks.get(item), "down": item in self.down,
            "meta": None if meta is None else [meta.version, meta.created_at, meta.creator_id],
        })

    def load_record(self, partition: int, key: bytes, raw: bytes | None) -> None:
        """One ``item-state`` record, read while bootstrapping (before any of the log is applied)."""
        if raw is None:
            return  # a tombstone: nothing in avrec writes one, but compaction tools might
        doc = orjson.loads(raw)
        if key == wire.POS_KEY:
            self.snapshot_upto[partition] = int(doc["upto"])
            return
        item = key.decode()
        if doc.get("down"):
            self.down.add(item)
            return
        if doc.get("row"):
            self.cooc.counts[item] = {str(j): float(c) for j, c in doc["row"].items()}
        if doc.get("pop") is not None:
            self.cooc.pops[item] = float(doc["pop"])
        if doc.get("lg") is not None:
            self.trending.set_lg(item, float(doc["lg"]))
        if doc.get("marks"):
            self.marks[item] = {str(s): int(o) for s, o in doc["marks"].items()}
        if doc.get("meta"):
            version, created_at, creator = doc["meta"]
            self.meta[item] = ItemMeta(str(version), float(created_at), str(creator))

    def finish_load(self, now: float | None = None) -> None:
        """After the snapshots: the fresh window from the loaded uploads, oldest first, and the log
        positions to apply from (the record after each partition's ``upto``)."""
        now = time.time() if now is None else now
        recent = sorted((m.created_at, i) for i, m in self.meta.items()
                        if m.created_at >= now - self.fresh.window_s and i not in self.down)
        for created_at, item in recent:
            self.fresh.add(item, created_at)
        self.position = [0 if u is None else u + 1 for u in self.snapshot_upto]

    def changed_since_snapshot(self, partition: int) -> list[str]:
        return list(self.dirty[partition])

    def summary(self) -> str:
        return (f"{len(self.cooc.counts)} co-occurrence rows, {len(self.cooc.pops)} popularities, "
                f"{len(self.trending)} trending, {len(self.meta)} uploads, {len(self.down)} taken down")
