"""Per-user cache of the content (ANN) candidates: skip the Milvus search when its answer is known.

A user's taste vector turns a little with each event, and the exact top-N search
it drives mostly returns the same items. On a miss the worker searches deeper
than it needs, M = N + ``extra`` hits, and keeps the query and the hits; later,
while the taste vector stays close, the top N are re-ranked from those M alone,
with no search, and only when that is *provably* the answer a fresh exact search
would give.

Why a hit is exact
------------------
Let û0 be the unit query of the stored search, S its M hits and ``floor`` the
M-th (lowest) similarity among them. Every available item v outside S scored
cos(û0, v) <= floor, or it would have been in S. For the current unit query û,
with d = ||û - û0|| and any unit v (cosine similarity normalises the item),

    cos(û, v) = <û0, v> + <û - û0, v> <= cos(û0, v) + ||û - û0|| ||v|| = cos(û0, v) + d

(Cauchy-Schwarz), so no item outside S scores above floor + d under û. Angles
give a tighter bound where the floor is high: angles between unit vectors obey
the triangle inequality, so with phi = angle(û, û0) and theta = arccos(floor),
every outside item is at least theta - phi away from û and scores at most
cos(max(0, theta - phi)) (below floor + d by up to ~0.04 for a floor of 0.8 and
5 degrees of turn). The bound used is the smaller of the two. The
exact similarities of the items in S to û are computed here from their vectors.
If the N-th best of them, t, is above that bound, the N best of S are the N best
of the whole catalogue, in the same order and with the same scores as a fresh
search: a hit. Otherwise (or when a vector is not at hand) it is a miss and the
caller searches. ``eps`` covers float32 rounding (Milvus' scores and ours differ
in the last bits), so a near-tie at the boundary (with an outside item, or
between the N-th and the (N+1)-th of S) is a miss, never a wrong hit; inside
the list, items within float32 rounding of each other (~1e-7) may come in
either order, as they may from two searches of slightly different code. When
the stored search returned fewer than M hits it covered the whole catalogue,
``floor`` is -inf and any S re-ranked is exact.

What it does not see (by design)
--------------------------------
"The whole catalogue" is the catalogue of the stored search. An item uploaded
since (or re-uploaded with a new vector) can be missing from a hit's answer
until the user's next miss; new items reach lists through the fresh source and
the upload fan-out anyway. An item of S that is taken down or re-uploaded is
dropped from the worker's item cache, so ``vectors_of`` answers None: a miss.
And a hit reproduces an *exact* search; with an approximate index (HNSW on a
Milvus cluster) it is the exact top N of S, which can differ from what the
index would have returned.

The cache is per user and per worker: users are owned by one worker, and after
a rebalance the new owner starts empty. Pure: no I/O, the caller searches.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Hits = list[tuple[str, float]]  # (item id, similarity), best first
VectorsOf = Callable[[Sequence[str]], "np.ndarray | None"]

# float32 scores of ~384-d unit vectors agree to ~1e-6 between Milvus and NumPy.
DEFAULT_EPS = 1e-5


@dataclass(slots=True)
class _Entry:
    query: np.ndarray  # the stored search's unit query û0 (float32: half the memory, well within eps)
    ids: tuple[str, ...]  # its hits sorted by id, so a stable sort by score breaks ties by id
    floor: float  # the M-th hit's similarity; -inf when the search returned fewer than M
    n: int  # the N it was stored for


class AnnCache:
    """Bounded LRU of users' stored searches; :meth:`lookup` answers a top-N or None (search).

    ``max_users`` 0 disables it (every lookup misses, nothing is stored). ``max_angle_deg``
    bounds how far the taste vector may have turned before a hit is not even tried: past
    it the bound above would almost never hold, and the check costs a vector fetch.
    """

    def __init__(self, max_users: int, extra: int, max_angle_deg: float, eps: float = DEFAULT_EPS) -> None:
        if max_users < 0 or extra < 0 or not 0 <= max_angle_deg <= 180:
            raise ValueError(f"AnnCache(max_users={max_users}, extra={extra}, max_angle_deg={max_angle_deg}): "
                             "expected max_users >= 0, extra >= 0 and 0 <= max_angle_deg <= 180")
        self.max_users, self.extra, self.eps = max_users, extra, eps
        # The chord between two unit vectors at this angle: d = 2 sin(angle / 2).
        self.max_distance = 2.0 * math.sin(math.radians(max_angle_deg) / 2.0)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_users > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def limit(self, n: int) -> int:
        """How many hits a search for ``n`` candidates should ask for (M = N + extra)."""
        return n + self.extra if self.enabled else n

    def lookup(self, user: str, vector: np.ndarray, n: int, vectors_of: VectorsOf) -> Hits | None:
        """The exact top ``n`` for ``vector`` from ``user``'s stored search, or None (search instead).

        ``vectors_of(ids)`` gives the items' vectors as a ``[len(ids), D]`` matrix, or None
        when one is not at hand (the worker's item cache: no fetch here).
        """
        found = self._lookup(user, vector, n, vectors_of)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(user)
        return found

    def _lookup(self, user: str, vector: np.ndarray, n: int, vectors_of: VectorsOf) -> Hits | None:
        entry = self._entries.get(user)
        if entry is None or entry.n != n or n <= 0:
            return None
        u = _unit(vector)
        if u is None:
            return None
        d = float(np.linalg.norm(u - entry.query.astype(np.float64)))
        if d > self.max_distance:
            return None
        ids = entry.ids
        if not ids:  # the stored search found nothing at all: the catalogue was empty
            return [] if entry.floor == -math.inf else None
        mat = vectors_of(ids)
        if mat is None or mat.ndim != 2 or mat.shape[0] != len(ids) or mat.shape[1] != u.shape[0]:
            return None
        norms = np.linalg.norm(mat, axis=1)
        if not np.all(norms > 0):
            return None  # a zero vector has no cosine; let Milvus decide
        sims = (mat @ u.astype(np.float32)) / norms
        full = np.argsort(-sims, kind="stable")  # ids are sorted: ties go by id
        order = full[:n]
        if len(ids) >= n:
            t = float(sims[order[-1]])
            if not t > _outside_bound(entry.floor, d) + self.eps:
                return None
            # The N-th and the (N+1)-th of S within rounding of each other: which one a search lists
            # is float32 noise, so do not claim to know.
            if len(ids) > n and not t > float(sims[full[n]]) + self.eps:
                return None
        elif entry.floor != -math.inf:
            return None  # fewer than N stored yet the search was cut at M: cannot happen unless n changed
        return [(ids[j], float(sims[j])) for j in order]

    def store(self, user: str, vector: np.ndarray, n: int, hits: Hits) -> Hits:
        """Keep the search of ``vector`` for ``user`` (``hits``: its top :meth:`limit` (n), best first);
        returns the N best of them, what the ranking is given (as if only N had been asked for)."""
        best = hits[:n]
        if not self.enabled or n <= 0:
            return best
        u = _unit(vector)
        if u is None:
            return best
        m = self.limit(n)
        floor = min(float(s) for _, s in hits) if len(hits) >= m else -math.inf
        # Interned: the same popular items sit in many users' entries; one string each, not one per entry.
        ids = tuple(sorted(sys.intern(i) for i, _ in hits))
        self._entries[user] = _Entry(u.astype(np.float32), ids, floor, n)
        self._entries.move_to_end(user)
        while len(self._entries) > self.max_users:
            self._entries.popitem(last=False)
        return best

    def drop(self, user: str) -> None:
        self._entries.pop(user, None)

    def clear(self) -> None:
        self._entries.clear()


def _outside_bound(floor: float, d: float) -> float:
    """The most an item outside the stored hits can score under a query ``d`` (chord) away from the
    stored one: min(floor + d, cos(max(0, arccos(floor) - angle))) (the module docstring)."""
    if floor == -math.inf:
        return -math.inf
    angle = 2.0 * math.asin(min(1.0, d / 2.0))
    theta = math.acos(max(-1.0, min(1.0, floor)))
    return min(floor + d, math.cos(max(0.0, theta - angle)))


def _unit(vector: np.ndarray) -> np.ndarray | None:
    """``vector`` / its norm in float64 (distances between nearby queries need the precision)."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return v / norm
