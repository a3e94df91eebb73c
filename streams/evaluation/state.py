"""Replay state: the catalogue as the worker sees it, the scoring core's state, and what the worker reads from them.

``CoreState`` is what the live worker keeps in its Faust tables and memory (user
states, co-occurrence, trending), updated through the one shared entry point
:func:`streams.ranking.ingest_interaction`, with plain dicts in place of tables.
Methods whose settings change how events are ingested (taste half-life, event
weights, co-occurrence window, ...) need their own ``CoreState``; methods that
differ only in how lists are ranked share one (see :func:`ingest_signature`).

:func:`replay_candidates` and :func:`feature_context` are what the worker gathers
from that state for one user (candidate pool, learned-ranker features): the
evaluation's hybrid ranks with them and ``avrec ranker fit``
(:mod:`streams.training`) learns from them, so both see the same pools.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from streams.evaluation.dataset import EvalLog, Event, ItemMeta, Upload
from streams.ranking import (Candidates, ItemInfo, RankingSettings, UserState, gather_candidates, ingest_interaction,
                            new_cooccurrence, new_trending, user_vector)
from streams.ranking.learned import FeatureContext
from streams.records import Interaction, watch_ratio

# The live FreshItems keeps at most this many recent uploads (streams/services/items.py).
FRESH_MAX_ITEMS = 5000

# RankingSettings fields that only shape lists; every other field changes the ingested state.
RANKING_ONLY_FIELDS = frozenset({
    "source_weights", "ann_candidates", "cooc_candidates", "fresh_window_s", "fresh_candidates",
    "trending_candidates", "mmr_lambda", "mmr_pool", "creator_cap", "top_k", "fusion", "rrf_k",
    "cooc_recency_half_life", "cooc_score_window", "ranker_path",
})  # fmt: skip


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest finite scores, best first, ties by index (deterministic)."""
    finite = np.isfinite(scores)
    n = int(finite.sum())
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    s = np.where(finite, scores, -np.inf)
    kth = -np.partition(-s, k - 1)[k - 1]
    cand = np.flatnonzero(s >= kth)
    order = np.lexsort((cand, -s[cand]))[:k]
    return cand[order]


def ingest_signature(cfg: RankingSettings) -> str:
    """Equal for two settings exactly when they build the same state from the same events."""
    d = cfg.model_dump(mode="json")
    return json.dumps({k: v for k, v in d.items() if k not in RANKING_ONLY_FIELDS}, sort_keys=True)


class Catalogue:
    """Uploaded items, their vectors and ``ItemInfo`` records, and interaction counts so far."""

    def __init__(self, items: list[ItemMeta], vectors: np.ndarray) -> None:
        self.meta = items
        self.ids = [it.item_id for it in items]
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.created = np.array([it.created_at for it in items], dtype=np.float64)
        self.available = np.zeros(len(items), dtype=bool)
        self.infos: dict[str, ItemInfo] = {}
        self.counts = np.zeros(len(items), dtype=np.float64)  # interactions of any type, so far
        self.total = 0.0
        self._upload_seq = np.full(len(items), -1, dtype=np.int64)
        self._n_uploads = 0
        self._avail_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def upload(self, j: int) -> None:
        it = self.meta[j]
        self.available[j] = True
        self.created[j] = it.created_at
        self._upload_seq[j] = self._n_uploads
        self._n_uploads += 1
        self.infos[it.item_id] = ItemInfo(
            item_id=it.item_id, creator_id=it.creator_id, title=it.title, vector=self.vectors[j],
            created_at=it.created_at, available=True,
        )

    def count(self, j: int) -> None:
        self.counts[j] += 1.0
        self.total += 1.0

    def available_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, vectors) of the uploaded items; rebuilt only after an upload."""
        if self._avail_cache is None or self._avail_cache[0] != self._n_uploads:
            idx = np.flatnonzero(self.available)
            self._avail_cache = (self._n_uploads, idx, np.ascontiguousarray(self.vectors[idx]))
        return self._avail_cache[1], self._avail_cache[2]

    def nearest(self, u: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Like the worker's Milvus search: the ``n`` uploaded items most similar to ``u``, best first, with
        their similarities (exact, where Milvus is approximate: the same up to its index's recall, ~1 at a
        few thousand items). Seen items are not filtered, as Milvus does not know them either."""
        if n <= 0:
            return []
        idx, mat = self.available_matrix()
        sims = mat @ u
        best = top_k(sims.astype(np.float64), n)
        return [(self.ids[idx[j]], float(sims[j])) for j in best]

    def fresh(self, now: float, n: int, window_s: float) -> list[tuple[str, float]]:
        """Like ``FreshItems.recent``: uploads with created_at >= now - window, newest first, at most n."""
        if n <= 0:
            return []
        ok = self.available & (self.created >= now - window_s)
        ok &= self._upload_seq >= self._n_uploads - FRESH_MAX_ITEMS
        idx = np.flatnonzero(ok)
        if not len(idx):
            return []
        # Newest first; equal times keep upload order, as the live list's stable sort does.
        order = np.lexsort((self._upload_seq[idx], -self.created[idx]))[:n]
        return [(self.ids[j], float(self.created[j])) for j in idx[order]]


class CoreState:
    """User states, co-occurrence and trending for one ingest configuration."""

    def __init__(self, cfg: RankingSettings) -> None:
        self.cfg = cfg
        self.users: dict[str, UserState] = {}
        self.cooc = new_cooccurrence(cfg)
        self.trending = new_trending(cfg)

    def apply(self, ev: Event, cat: Catalogue) -> bool:
        """The worker's per-event update (streams/services/interactions.py), minus the I/O."""
        state = self.users.get(ev.user_id)
        if state is None:
            state = self.users[ev.user_id] = UserState()
        meta = cat.meta[ev.item]
        ratio = _ratio(ev, meta)
        return ingest_interaction(state, ev.event_id, meta.item_id, cat.vectors[ev.item], ev.type, ratio, ev.ts,
                                  self.cfg, cooc=self.cooc, trending=self.trending)


def replay_candidates(core: CoreState, cat: Catalogue, cfg: RankingSettings, user: str, now: float) -> Candidates:
    """What ``Recommender.lists_for`` gathers for one user, through the same ``gather_candidates``, with
    ``Catalogue.nearest`` in place of the Milvus search."""
    state = core.users.get(user)
    u = user_vector(state)
    ann = cat.nearest(u, cfg.ann_candidates) if u is not None else []
    fresh = cat.fresh(now, cfg.fresh_candidates, cfg.fresh_window_s)
    trending = core.trending.top(cfg.trending_candidates, now)
    return gather_candidates(state, core.cooc, cfg, ann, fresh, trending)


def feature_context(core: CoreState, cat: Catalogue, user: str, now: float) -> FeatureContext:
    """What the learned ranker's features read for one user at ``now``, as the worker builds it."""
    return FeatureContext(core.users.get(user), core.cooc, core.trending, cat.infos, now)


def replay_order(log_: EvalLog, cat: Catalogue, stop: int) -> Iterator[tuple[int, Event]]:
    """``(index, interaction)`` for the first ``stop`` interactions, in log order. Each upload reaches
    ``cat`` when it comes, so an item can only be recommended once it has been uploaded."""
    i = 0
    for ev in log_.stream:
        if isinstance(ev, Upload):
            cat.upload(ev.item)
            continue
        if i >= stop:
            return
        yield i, ev
        i += 1


def _ratio(ev: Event, meta: ItemMeta) -> float | None:
    if ev.watch_ms is None:
        return None
    it = Interaction.model_construct(event_id=ev.event_id, user_id=ev.user_id, item_id=meta.item_id, type=ev.type,
                                     watch_ms=ev.watch_ms, ts=ev.ts)
    return watch_ratio(it, meta.duration_s)


def excluded(state: UserState | None, index: dict[str, int]) -> list[int]:
    """Item indices the user must not be recommended: seen or hidden (what recommend() filters)."""
    if state is None:
        return []
    out = [index[i] for i in state.seen if i in index]
    out.extend(index[i] for i in state.hidden if i in index)
    return out


class SeenLog(dict):
    """Exact per-user sets of items interacted with (unbounded, unlike the LRU in UserState): picks targets."""

    def add(self, user: str, item: int) -> bool:
        """Record (user, item); True when it is the user's first interaction with the item."""
        s = self.get(user)
        if s is None:
            s = self[user] = set()
        if item in s:
            return False
        s.add(item)
        return True

    def has(self, user: str, item: int) -> bool:
        s = self.get(user)
        return s is not None and item in s
