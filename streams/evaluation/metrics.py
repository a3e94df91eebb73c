"""Metric functions of the prequential evaluation, and their per-method accumulator.

Every function takes one ranked list (item indices, best first) and is pure, so
the unit tests check them against hand-computed cases. Definitions:

* HR@K: 1 if the target is among the first K items, else 0 (one target per list).
* NDCG@K: with a single relevant item the ideal DCG is 1, so NDCG is
  ``1 / log2(rank + 2)`` for a 0-based rank < K, else 0.
* Intra-list diversity: ``1 - mean pairwise cosine`` over the list's distinct
  pairs of item vectors (lists shorter than 2 have none and are not counted).
* Novelty: mean ``-log2 p_i`` over the list, ``p_i`` the item's share of all
  interactions applied so far, add-one smoothed over the catalogue
  (``(c_i + 1) / (N + |I|)``) so an item nobody touched yet has a finite value.
* Catalogue coverage: distinct items recommended at least once / catalogue size.
* Reasons share: recommended items with at least one specific reason / all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def hit_at(ranked: Sequence[int], target: int, k: int) -> float:
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at(ranked: Sequence[int], target: int, k: int) -> float:
    for r, item in enumerate(ranked[:k]):
        if item == target:
            return 1.0 / math.log2(r + 2)
    return 0.0


def intra_list_diversity(vectors: np.ndarray) -> float | None:
    """``1 - mean cosine`` over distinct pairs of the rows of ``vectors``; None below two rows."""
    n = len(vectors)
    if n < 2:
        return None
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1)
    norms[norms == 0] = 1.0
    v = v / norms[:, None]
    s = v.sum(axis=0)
    # Σ_{i≠j} cos(i, j) = |Σ v|² - Σ |v_i|²: O(nD) instead of an n×n Gram matrix.
    off = float(s @ s) - float(np.einsum("ij,ij->", v, v))
    return 1.0 - off / (n * (n - 1))


def novelty(ranked: Sequence[int], counts: np.ndarray, total: float) -> float | None:
    """Mean self-information ``-log2 p_i`` of the list's items (see the module docstring)."""
    if len(ranked) == 0:
        return None
    c = counts[np.asarray(ranked, dtype=np.int64)]
    p = (c + 1.0) / (float(total) + len(counts))
    return float(np.mean(-np.log2(p)))


def coverage(recommended: set[int] | np.ndarray, catalogue_size: int) -> float:
    if catalogue_size <= 0:
        return 0.0
    n = int(np.count_nonzero(recommended)) if isinstance(recommended, np.ndarray) else len(recommended)
    return n / catalogue_size


@dataclass
class MethodMetrics:
    """Running sums for one method; :meth:`summary` turns them into the reported numbers."""

    ks: tuple[int, ...]
    n_items: int
    n_buckets: int = 20
    targets: int = 0
    pos_targets: int = 0
    hits: dict[int, float] = field(default_factory=dict)
    ndcg: dict[int, float] = field(default_factory=dict)
    pos_hits: dict[int, float] = field(default_factory=dict)
    pos_ndcg: dict[int, float] = field(default_factory=dict)
    ild_sum: float = 0.0
    ild_n: int = 0
    nov_sum: float = 0.0
    nov_n: int = 0
    list_len_sum: int = 0
    rec_items: int = 0
    rec_with_reason: int = 0
    has_reasons: bool = False
    empty_lists: int = 0
    seconds: float = 0.0
    bucket_hits: np.ndarray | None = None
    bucket_n: np.ndarray | None = None
    recommended: np.ndarray | None = None

    def __post_init__(self) -> None:
        for d in (self.hits, self.ndcg, self.pos_hits, self.pos_ndcg):
            for k in self.ks:
                d.setdefault(k, 0.0)
        self.bucket_hits = np.zeros(self.n_buckets)
        self.bucket_n = np.zeros(self.n_buckets)
        self.recommended = np.zeros(self.n_items, dtype=bool)

    @property
    def kmax(self) -> int:
        return max(self.ks)

    def add(self, ranked: Sequence[int], target: int, positive: bool, bucket: int, vectors: np.ndarray,
            counts: np.ndarray, total: float, reasons: int | None = None) -> None:
        """Score one list against its target; ``reasons`` = items with a specific reason (None: no reasons)."""
        ranked = list(ranked[: self.kmax])
        self.targets += 1
        self.pos_targets += positive
        for k in self.ks:
            h, g = hit_at(ranked, target, k), ndcg_at(ranked, target, k)
            self.hits[k] += h
            self.ndcg[k] += g
            if positive:
                self.pos_hits[k] += h
                self.pos_ndcg[k] += g
        self.bucket_n[bucket] += 1
        self.bucket_hits[bucket] += hit_at(ranked, target, self.kmax)
        self.list_len_sum += len(ranked)
        if not ranked:
            self.empty_lists += 1
            return
        self.recommended[ranked] = True
        d = intra_list_diversity(vectors[ranked])
        if d is not None:
            self.ild_sum += d
            self.ild_n += 1
        nv = novelty(ranked, counts, total)
        if nv is not None:
            self.nov_sum += nv
            self.nov_n += 1
        self.rec_items += len(ranked)
        if reasons is not None:
            self.has_reasons = True
            self.rec_with_reason += reasons

    def summary(self, catalogue_size: int) -> dict:
        t, p = max(self.targets, 1), max(self.pos_targets, 1)
        out: dict = {"targets": self.targets, "positive_targets": self.pos_targets}
        for k in self.ks:
            out[f"hr@{k}"] = self.hits[k] / t
            out[f"ndcg@{k}"] = self.ndcg[k] / t
        for k in self.ks:
            out[f"pos_hr@{k}"] = self.pos_hits[k] / p
            out[f"pos_ndcg@{k}"] = self.pos_ndcg[k] / p
        out["coverage"] = coverage(self.recommended, catalogue_size)
        out["diversity"] = self.ild_sum / self.ild_n if self.ild_n else None
        out["novelty"] = self.nov_sum / self.nov_n if self.nov_n else None
        out["reasons_share"] = (self.rec_with_reason / self.rec_items) if (self.has_reasons and self.rec_items) else None
        out["mean_list_len"] = self.list_len_sum / t
        out["empty_lists"] = self.empty_lists
        out["seconds"] = self.seconds
        out["hr_over_time"] = [float(h / n) if n else None for h, n in zip(self.bucket_hits, self.bucket_n)]
        return out
