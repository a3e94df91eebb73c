"""Plain-Python co-occurrence scoring: the oracle the vectorised code is held to, to the bit.

The code the row arrays (``streams/ranking/cooc_rows.py``) replaced, kept outside the package:
``tests/unit/test_cooc_arrays.py`` compares with it, ``python -m streams.ranking.bench --cooc-only``
times it beside the array path.
"""

from __future__ import annotations

import heapq
import math
from itertools import repeat
from typing import Iterable, Reversible, Sequence

import numpy as np

from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.learned import COOC_VIEWS, history_view_weights


def score_candidates_reference(
    cooc: CoOccurrence,
    history_item_ids: Sequence[str],
    n: int,
    exclude: Iterable[str] = (),
    recency_half_life: float | None = None,
    score_window: int | None = None,
) -> list[tuple[str, float, str]]:
    """The plain-Python loop ``CoOccurrence.score_candidates_explained`` must agree with, to the bit
    (the code before the arrays)."""
    if n <= 0:
        return []
    limit = cooc.score_window if not score_window else int(score_window)
    hist: list[str] = []
    for h in reversed(history_item_ids):  # most recent first, distinct, at most `score_window`
        if len(hist) == limit:
            break
        if h not in hist:
            hist.append(h)
    skip = set(hist)
    skip.update(exclude)
    acc: dict[str, float] = {}  # j -> Σ_h w_h c_hj / sqrt(p_h)   (p_j applied once at the end)
    best: dict[str, tuple[float, str]] = {}
    pops_get = cooc.pops.get
    for h, w in zip(hist, cooc.history_weights(len(hist), recency_half_life)):
        row = cooc.counts.get(h)
        ph = float(pops_get(h, 0.0))
        if not row or ph <= 0:
            continue
        inv = w / math.sqrt(ph)
        for j, c in row.items():
            if j in skip:
                continue
            part = c * inv
            b = best.get(j)
            if b is None:
                acc[j] = part
                best[j] = (part, h)
            else:
                acc[j] += part
                if part > b[0]:  # strict >: the most recent history item wins ties
                    best[j] = (part, h)
    out = []
    for j, a in acc.items():
        pj = float(pops_get(j, 0.0))
        if pj > 0:
            out.append((j, a / math.sqrt(pj), best[j][1]))
    # The n best, ties by id: a bounded heap rather than sorting every neighbour.
    return heapq.nsmallest(n, out, key=lambda t: (-t[1], t[0]))


def cooc_views_reference(cooc: CoOccurrence, histories: Sequence[Reversible[str]], item_ids: Sequence[str],
                          views: Sequence[tuple[float, int]] = COOC_VIEWS) -> np.ndarray:
    """The plain per-row scan ``learned.cooc_views`` must agree with to the bit."""
    row_of, weights = history_view_weights(histories, views)
    nv, n = len(views), len(item_ids)
    pos = {j: i for i, j in enumerate(item_ids)}
    parts_i: list[np.ndarray] = []
    parts_c: list[np.ndarray] = []
    parts_r: list[np.ndarray] = []
    for h, r in row_of.items():
        row = cooc.counts.get(h)
        ph = float(cooc.pops.get(h, 0.0))
        if not row or ph <= 0:
            continue
        # map(dict.get) runs in C: the per-entry cost of the scan that dominates this function.
        idx = np.fromiter(map(pos.get, row, repeat(-1)), dtype=np.int64, count=len(row))
        keep = idx >= 0
        if not keep.any():
            continue
        c = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        parts_i.append(idx[keep])
        parts_c.append(c[keep] / math.sqrt(ph))
        parts_r.append(np.full(int(keep.sum()), r))
    out = np.zeros((n, len(histories) * nv))
    if not parts_i:
        return out
    ii = np.concatenate(parts_i)
    part = np.concatenate(parts_c)
    w = weights[np.concatenate(parts_r)]
    for col in range(w.shape[1]):
        out[:, col] = np.bincount(ii, weights=part * w[:, col], minlength=n)
    pj = np.fromiter((float(cooc.pops.get(j, 0.0)) for j in item_ids), dtype=np.float64, count=n)
    with np.errstate(divide="ignore"):
        scale = np.where(pj > 0, 1.0 / np.sqrt(np.maximum(pj, 1e-300)), 0.0)
    return out * scale[:, None]
