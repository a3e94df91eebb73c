"""Item metadata and vectors close at hand: an LRU cache in front of Milvus, and the fresh-upload window.

The cache is kept coherent across workers by the item-state log: when an
upload (a re-upload with a new vector included) or a takedown of an item is
applied to this worker's replica, ``invalidate`` drops the item, and the next
read fetches it from Milvus again (the upload is in Milvus before its log record
is written). A fetch already in flight when the item is invalidated is not
cached, so it cannot put the old row back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from streams.ranking import ItemInfo
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


class ItemCache:
    """LRU of ItemInfo keyed by item id; misses are fetched from Milvus in one batched ``get``."""

    def __init__(self, collection: ItemCollection, max_items: int) -> None:
        self.collection = collection
        self.max_items = max_items
        self._items: OrderedDict[str, ItemInfo] = OrderedDict()
        self._durations: dict[str, float] = {}
        self._versions: dict[str, str] = {}  # the upload version an entry was put with (this worker's uploads)
        self._invalidations = 0
        self._invalidated_at: dict[str, int] = {}  # item -> value of _invalidations when it was last dropped
        self.hits = self.misses = 0

    def put(self, item: ItemInfo, duration_s: float | None = None, version: str | None = None) -> None:
        if version is not None:
            self._versions[item.item_id] = version
        self._items[item.item_id] = item
        self._items.move_to_end(item.item_id)
        if duration_s:
            self._durations[item.item_id] = float(duration_s)
        while len(self._items) > self.max_items:
            old, _ = self._items.popitem(last=False)
            self._durations.pop(old, None)
            self._versions.pop(old, None)

    def duration(self, item_id: str) -> float | None:
        return self._durations.get(item_id)

    def drop(self, item_id: str) -> None:
        self._items.pop(item_id, None)
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
            vectors = [items[i].vector for i in item_ids]
        except KeyError:
            return None
        if not vectors or any(v is None for v in vectors):
            return None if vectors else np.zeros((0, 0), dtype=np.float32)
        return np.stack(vectors).astype(np.float32, copy=False)

    async def get_many(self, item_ids: Iterable[str]) -> dict[str, ItemInfo]:
        """Known items among ``item_ids`` (unknown ones are simply absent)."""
        found: dict[str, ItemInfo] = {}
        missing = []
        for iid in dict.fromkeys(item_ids):
            item = self._items.get(iid)
            if item is None:
                missing.append(iid)
            else:
                self._items.move_to_end(iid)
                found[iid] = item
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            before = self._invalidations
            rows = await asyncio.to_thread(self.collection.get, missing)
            for iid, row in rows.items():
                item = item_from_row(row)
                if self._invalidated_at.get(iid, 0) <= before:  # not dropped while the fetch was in flight
                    self.put(item, row.get("duration_s"))
                found[iid] = item
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
