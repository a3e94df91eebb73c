"""Decayed popularity ("trending") with O(1) updates.

The score of item i at time ``now`` is

    score_i(now) = Σ_events w · 2 ** (-(now - t) / h)

Rescaling every item as time passes would cost O(N) per tick. Forward decay
instead stores, per item, a quantity that never needs rescaling:

    g_i = Σ_events w · 2 ** ((t - L) / h)        (L: a fixed landmark, here t = 0)
    score_i(now) = g_i · 2 ** (-(now - L) / h)

``g_i`` grows without bound (2 ** (t/h) overflows float64 after ~1024 half-lives),
so it is kept in log space, ``lg_i = log2(g_i)``, and an update is
``lg_i = logaddexp2(lg_i, log2(w) + (t - L) / h)``. All items share the factor
``2 ** (-now/h)``, so ranking by ``lg`` ranks by current score and does not
depend on ``now``. Works for late (out-of-order) events unchanged.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable

import numpy as np

from streams.ranking.exceptions import RankingError, StateFormatError

_LANDMARK = 0.0  # unix epoch: fixed, so two counters fed the same events agree exactly


class DecayedCounter:
    """Per-item exponentially decayed counts; bounded to ``max_items`` (lowest pruned)."""

    def __init__(self, half_life_s: float, max_items: int = 50_000) -> None:
        if not half_life_s > 0:
            raise RankingError(f"half_life_s must be > 0, got {half_life_s!r}")
        if max_items < 1:
            raise RankingError(f"max_items must be >= 1, got {max_items!r}")
        self.half_life_s = float(half_life_s)
        self.max_items = int(max_items)
        # Parallel arrays (ids[k], lg[k]) + index, so top() is one argpartition.
        self._ids: list[str] = []
        self._lg = np.empty(64, dtype=np.float64)
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def update(self, item_id: str, ts: float, weight: float = 1.0) -> None:
        """Add one event of ``weight`` (> 0) at ``ts`` for ``item_id``. O(1) amortised."""
        if not (weight > 0 and math.isfinite(weight)):
            raise RankingError(f"trending weights must be positive and finite, got {weight!r}")
        if not math.isfinite(ts):
            raise RankingError(f"event timestamp must be finite, got {ts!r}")
        x = math.log2(weight) + (float(ts) - _LANDMARK) / self.half_life_s
        k = self._index.get(item_id)
        if k is None:
            k = len(self._ids)
            if k == self._lg.shape[0]:
                self._lg = np.concatenate([self._lg, np.empty_like(self._lg)])
            self._ids.append(item_id)
            self._index[item_id] = k
            self._lg[k] = x
            if len(self._ids) > self.max_items:
                self._prune()
        else:
            a = float(self._lg[k])
            hi, lo = (a, x) if a >= x else (x, a)
            self._lg[k] = hi + math.log2(1.0 + 2.0 ** (lo - hi))

    def _prune(self) -> None:
        # Drop down to 90% of max_items so pruning (O(N)) happens once per 10% of inserts.
        keep = max(1, int(self.max_items * 0.9))
        n = len(self._ids)
        lg = self._lg[:n]
        order = np.lexsort((np.arange(n), -lg))[:keep]  # highest first, ties: older entries first
        order.sort()
        self._ids = [self._ids[i] for i in order]
        new = np.empty(max(64, self._lg.shape[0]), dtype=np.float64)
        new[: len(order)] = lg[order]
        self._lg = new
        self._index = {iid: j for j, iid in enumerate(self._ids)}

    def remove(self, item_id: str) -> bool:
        """Forget ``item_id`` (taken down). True if it was there."""
        k = self._index.pop(item_id, None)
        if k is None:
            return False
        last = len(self._ids) - 1
        if k != last:  # swap the last entry into the hole
            moved = self._ids[last]
            self._ids[k] = moved
            self._lg[k] = self._lg[last]
            self._index[moved] = k
        self._ids.pop()
        return True

    def lg_of(self, item_id: str) -> float | None:
        """The item's stored log2 score (see the module doc), None if it has none."""
        k = self._index.get(item_id)
        return None if k is None else float(self._lg[k])

    def set_lg(self, item_id: str, lg: float) -> None:
        """Set the item's stored log2 score, as :meth:`lg_of` read it (restoring a snapshot)."""
        if not math.isfinite(lg):
            raise RankingError(f"a trending log2 score must be finite, got {lg!r}")
        self.remove(item_id)
        k = len(self._ids)
        if k == self._lg.shape[0]:
            self._lg = np.concatenate([self._lg, np.empty_like(self._lg)])
        self._ids.append(item_id)
        self._index[item_id] = k
        self._lg[k] = float(lg)
        if len(self._ids) > self.max_items:
            self._prune()

    def _score_of_lg(self, lg: np.ndarray, now: float) -> np.ndarray:
        return np.exp2(lg - (float(now) - _LANDMARK) / self.half_life_s)

    def score(self, item_ids: Iterable[str], now: float) -> np.ndarray:
        """Current decayed scores (float64), 0 for unknown items."""
        ids = item_ids if isinstance(item_ids, (list, tuple)) else list(item_ids)
        # Each id's slot in one C-level pass (-1: unknown); the buffer always has room, so slot -1 reads
        # some slot, and np.where puts -inf (a score of 0) there.
        k = np.fromiter(map(self._index.get, ids, itertools.repeat(-1)), dtype=np.intp, count=len(ids))
        lg = np.where(k >= 0, self._lg[k], -np.inf)
        return self._score_of_lg(lg, now)

    def top(self, n: int, now: float) -> list[tuple[str, float]]:
        """The ``n`` highest-scoring items at ``now``, best first (ties by item id)."""
        size = len(self._ids)
        if n <= 0 or size == 0:
            return []
        lg = self._lg[:size]
        if n < size:
            # argpartition picks arbitrarily among ties at the cut: take every
            # item at or above the n-th score, then sort with the id tie-break.
            kth = lg[np.argpartition(-lg, n - 1)[n - 1]]
            idx = np.flatnonzero(lg >= kth)
        else:
            idx = np.arange(size)
        picked = sorted(idx.tolist(), key=lambda j: (-lg[j], self._ids[j]))[:n]
        scores = self._score_of_lg(lg[picked], now)
        return [(self._ids[j], float(s)) for j, s in zip(picked, scores)]

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; log2 scores are plain floats (JSON float text round-trips exactly)."""
        return {
            "v": 1,
            "half_life_s": self.half_life_s,
            "max_items": self.max_items,
            "items": {iid: float(self._lg[k]) for k, iid in enumerate(self._ids)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DecayedCounter":
        try:
            if data.get("v") != 1:
                raise StateFormatError(f"trending state version {data.get('v')!r}, expected 1")
            c = cls(float(data["half_life_s"]), int(data["max_items"]))
            items = data["items"]
            c._ids = [str(i) for i in items]
            c._lg = np.empty(max(64, len(c._ids)), dtype=np.float64)
            c._lg[: len(c._ids)] = [float(x) for x in items.values()]
            c._index = {iid: k for k, iid in enumerate(c._ids)}
            return c
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFormatError(f"cannot read trending state: {exc!r}") from exc
