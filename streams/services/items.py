"""Item metadata and vectors close at hand: an LRU cache in front of Milvus, and the fresh-upload window.

The cached vectors live in one contiguous float32 matrix, a row per item
(:class:`VectorRows`); each cached ``ItemInfo.vector`` is a read-only view of its
row and ``ItemInfo.row`` its number. Ranking gathers a list's candidates with one
``take`` from that matrix instead of stacking ~400 separate arrays
(``streams/ranking/recommend.py``), the single largest cost of a list before.

The cache is kept coherent across workers by the item-state log: when an
upload (a re-upload with a new vector included) or a takedown of an item is
applied to this worker's replica, ``invalidate`` drops the item, and the next
read fetches it from Milvus again (the upload is in Milvus before its log record
is written). A fetch already in flight when the item is invalidated is not
cached, so it cannot put the old row back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from streams.ranking import ItemInfo
from streams.ranking.recommend import ItemRows
from streams.vectors.collections import ItemCollection

log = logging.getLogger(__name__)


def item_from_row(row: dict) -> ItemInfo:
    """A Milvus ``items`` row -> the ranking core's ItemInfo."""
    modalities = {}
    for name, field in (("text", "text_vec"), ("audio", "audio_vec"), ("video", "video_vec")):
        if field in row and name in (row.get("modalities") or "").split(","):
            modalities[name] = np.asarray(row[field], dtype=np.float32)
    return ItemInfo(
        item_id=row["item_id"],
        creator_id=row.get("creator_id", ""),
        title=row.get("title", ""),
        vector=np.asarray(row["vector"], dtype=np.float32),
        created_at=row.get("created_at", 0) / 1000.0,
        available=bool(row.get("available", True)),
        modality_vectors=modalities or None,
    )


class VectorRows:
    """The cached items' vectors as rows of one contiguous float32 ``[capacity, D]`` matrix.

    A row freed by an eviction is reused. Before that, the evicted ItemInfo gets its own
    copy of the vector and ``row = -1``, so an ItemInfo someone still holds never sees
    another item's vector. The matrix doubles when full; the cached ItemInfos' views are
    then re-pointed at the new one (amortised O(1) per item).
    """

    def __init__(self, initial_rows: int = 1024) -> None:
        self.matrix: np.ndarray | None = None
        self._initial = max(1, int(initial_rows))
        self._used = 0
        self._free: list[int] = []

    def attach(self, item: ItemInfo, cached: OrderedDict[str, ItemInfo]) -> None:
        """Give ``item`` a row holding its vector (unchanged values); no row for a missing vector or one
        of another dimension than the matrix's (ranking then stacks it the slow way)."""
        if item.vector is None:
            return
        vec = np.asarray(item.vector, dtype=np.float32).reshape(-1)
        if self.matrix is None:
            self.matrix = np.zeros((self._initial, vec.shape[0]), dtype=np.float32)
        if vec.shape[0] != self.matrix.shape[1]:
            log.warning("item %s has a %d-dim vector, the cache's matrix %d: not given a row",
                        item.item_id, vec.shape[0], self.matrix.shape[1])
            return
        if self._free:
            row = self._free.pop()
        else:
            if self._used == self.matrix.shape[0]:
                self._grow(cached)
            row = self._used
            self._used += 1
        self.matrix[row] = vec
        item.row = row
        item.vector = self._view(row)

    def release(self, item: ItemInfo) -> None:
        """``item`` leaves the cache: it keeps its vector (a copy) and its row is free for reuse."""
        if item.row < 0:
            return
        item.vector = np.array(item.vector, dtype=np.float32)
        self._free.append(item.row)
        item.row = -1

    def _view(self, row: int) -> np.ndarray:
        v = self.matrix[row]
        v.flags.writeable = False  # a write through an ItemInfo would change the shared matrix
        return v

    def _grow(self, cached: OrderedDict[str, ItemInfo]) -> None:
        old = self.matrix
        self.matrix = np.zeros((2 * old.shape[0], old.shape[1]), dtype=np.float32)
        self.matrix[: old.shape[0]] = old
        for info in cached.values():
            if info.row >= 0:
                info.vector = self._view(info.row)


class ItemCache:
    """LRU of ItemInfo keyed by item id; misses are fetched from Milvus in one batched ``get``."""

    def __init__(self, collection: ItemCollection, max_items: int) -> None:
        self.collection = collection
        self.max_items = max_items
        self._items: OrderedDict[str, ItemInfo] = OrderedDict()
        self.rows = VectorRows()
        self._durations: dict[str, float] = {}
        self._versions: dict[str, str] = {}  # the upload version an entry was put with (this worker's uploads)
        self._invalidations = 0
        self._invalidated_at: dict[str, int] = {}  # item -> value of _invalidations when it was last dropped
        self.hits = self.misses = 0

    def put(self, item: ItemInfo, duration_s: float | None = None, version: str | None = None) -> ItemInfo:
        """Cache ``item`` (most recently used); returns the cached ItemInfo, its vector now a row view."""
        if version is not None:
            self._versions[item.item_id] = version
        previous = self._items.get(item.item_id)
        if previous is not item:
            if previous is not None:
                self.rows.release(previous)
            if item.row >= 0:  # another cache's row (never this one's: only put() attaches)
                item = dataclasses.replace(item, row=-1)
            self.rows.attach(item, self._items)
        self._items[item.item_id] = item
        self._items.move_to_end(item.item_id)
        if duration_s:
            self._durations[item.item_id] = float(duration_s)
        while len(self._items) > self.max_items:
            old, info = self._items.popitem(last=False)
            self.rows.release(info)
            self._durations.pop(old, None)
            self._versions.pop(old, None)
        return item

    def duration(self, item_id: str) -> float | None:
        return self._durations.get(item_id)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def invalidations(self) -> int:
        """How many items were dropped so far: what a fetch started now compares against (:meth:`put_rows`)."""
        return self._invalidations

    def _dropped_since(self, item_id: str, before: int) -> bool:
        """Whether ``item_id`` was dropped after :attr:`invalidations` was ``before`` (a row read from Milvus
        since then may be stale)."""
        return self._invalidated_at.get(item_id, 0) > before

    def put_rows(self, rows: Iterable[dict], before: int, limit: int) -> int:
        """Cache Milvus rows read since :attr:`invalidations` was ``before`` (a warm-up: not a read, so
        they count as neither hits nor misses), skipping items already cached or dropped meanwhile, up
        to ``limit`` items in all. Returns how many were added."""
        added = 0
        for row in rows:
            if len(self._items) >= limit:
                break
            iid = row["item_id"]
            if iid in self._items or self._dropped_since(iid, before):
                continue
            self.put(item_from_row(row), row.get("duration_s"))
            added += 1
        return added

    def drop(self, item_id: str) -> None:
        info = self._items.pop(item_id, None)
        if info is not None:
            self.rows.release(info)
        self._durations.pop(item_id, None)
        self._versions.pop(item_id, None)

    def invalidate(self, item_id: str, version: str | None) -> None:
        """The item was uploaded as ``version`` (None: taken down): drop it unless it is that version already."""
        if version is not None and self._versions.get(item_id) == version:
            return
        self.drop(item_id)
        self._invalidations += 1
        self._invalidated_at[item_id] = self._invalidations
        if len(self._invalidated_at) > 4 * max(1, self.max_items):
            self._invalidated_at.clear()  # only fetches in flight need it; a bounded, rare reset

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray | None:
        """The cached vectors of ``item_ids`` as one ``[len(item_ids), D]`` float32 matrix, in order;
        None when any of them is not cached (or has no vector). Reads only: no fetch, no LRU move."""
        items = self._items
        try:
            rows = [items[i].row for i in item_ids]
        except KeyError:
            return None
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        if min(rows) < 0:
            return None
        return self.rows.matrix.take(rows, axis=0)

    async def get_many(self, item_ids: Iterable[str]) -> ItemRows:
        """Known items among ``item_ids`` (unknown ones are simply absent), with the vector matrix their
        rows index (valid until the next ``put`` or ``get_many``: rank them before awaiting anything)."""
        cached = self._items
        ids = item_ids if isinstance(item_ids, (set, frozenset, dict)) else dict.fromkeys(item_ids)
        found = ItemRows((iid, item) for iid in ids if (item := cached.get(iid)) is not None)
        missing = [iid for iid in ids if iid not in found]
        if len(cached) + len(missing) > 0.9 * self.max_items:
            # Near the bound, reads keep the LRU order (what is evicted next). Below it nothing is
            # evicted, so the ~25k reordering calls of a batch's lists would buy nothing.
            move = cached.move_to_end
            for iid in found:
                move(iid)
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            before = self._invalidations
            rows = await asyncio.to_thread(self.collection.get, missing)
            for iid, row in rows.items():
                item = item_from_row(row)
                if not self._dropped_since(iid, before):  # not dropped while the fetch was in flight
                    item = self.put(item, row.get("duration_s"))
                found[iid] = item
        # Set last: a put above may have grown (replaced) the matrix; rows stay valid across growth.
        found.matrix = self.rows.matrix
        return found


class FreshItems:
    """Recent uploads (id, created_at), newest last, within ``window_s``: every worker's built from the
    uploads in its item-state replica (streams/items/store.py)."""

    def __init__(self, window_s: float, max_items: int = 5000) -> None:
        self.window_s = window_s
        self.max_items = max_items
        self._items: OrderedDict[str, float] = OrderedDict()

    def add(self, item_id: str, created_at: float) -> None:
        self._items.pop(item_id, None)
        self._items[item_id] = created_at
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def remove(self, item_id: str) -> None:
        self._items.pop(item_id, None)

    def recent(self, now: float, n: int) -> list[tuple[str, float]]:
        cutoff = now - self.window_s
        out = [(iid, ts) for iid, ts in self._items.items() if ts >= cutoff]
        out.sort(key=lambda x: x[1], reverse=True)
        return out[:n]
