"""Item-item ridge regression (EASE) over what users watched: a learned ranker's strongest feature.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019) fits,
in closed form, one ridge regression of each item on all the others over the
binary user × item matrix ``X``:

    B = I − P · diag(1 / diag(P)),   P = (XᵀX + λI)⁻¹,   diag(B) = 0,

so ``B[h, j]`` is what having watched ``h`` says about ``j`` *beyond* the other
items of the profile. Cosine co-occurrence (the live store) scores each history
item's neighbours on their own and so counts the same evidence many times over;
the regression explains it away. The two are different signals, and the ranker
learns how much each is worth.

Here ``X`` holds every item each user interacted with (``UserState.seen``:
views, likes and dislikes alike), read from the same user states the worker
keeps. It is fit offline, with the ranker (``avrec ranker fit``), and shipped
inside the ranker file; it is not updated per event. The rows are sparsified
to each item's ``top_k`` largest weights (by magnitude), which bounds the file
and the per-list cost; items uploaded after the fit score 0 until the next fit.

Dense algebra bounds the catalogue it can fit: the ``max_items`` most watched
items are modelled, the rest score 0 (at 10,000 items the fit holds one 800 MB
float64 matrix, 1.1 GB at its peak, for 12-20 s on two cores).
"""

from __future__ import annotations

import base64
import logging
import math
from typing import Any, Iterable, Mapping, Reversible, Sequence

import numpy as np
import scipy.linalg
from scipy.sparse import csr_matrix

from streams.ranking.exceptions import RankingError, StateFormatError

log = logging.getLogger(__name__)

# How a user's watched history is weighed: every one of its last ``history`` distinct items alike
# ("all"), and with a recency half-life of 4 items, the time scale the co-occurrence source uses.
VIEW_NAMES = ("all", "hl4")
_HALF_LIFE = 4.0


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unb64(s: str, dtype: type) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s.encode("ascii"), validate=True), dtype=dtype).copy()


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's dense ``B = I − P / diag(P)``, ``P = (G + λI)⁻¹``, ``diag(B) = 0``, from a symmetric Gram
    matrix, which it consumes: at 10,000 items every n x n float64 array is 800 MB, so the algebra
    works in place. ``G`` is symmetric, so it or its transpose is it in Fortran order, which LAPACK
    inverts in its own buffer; the inverse is symmetric too. Returns ``B`` in C order."""
    gram[np.diag_indices(len(gram))] += l2
    b = scipy.linalg.inv(gram if gram.flags.f_contiguous else gram.T, overwrite_a=True, check_finite=False)
    b = b if b.flags.c_contiguous else b.T
    b /= -np.diag(b)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class ItemRegression:
    """Sparse EASE weights: row ``h`` holds the largest ``B[h, j]``; ``views`` scores items against a history."""

    def __init__(self, item_ids: Sequence[str], weights: csr_matrix, l2: float, history: int = 200) -> None:
        n = len(item_ids)
        if weights.shape != (n, n):
            raise RankingError(f"item regression weights must be {n} x {n} (one row and column per item), "
                               f"got {weights.shape}")
        if len(set(item_ids)) != n:
            raise RankingError("item regression item ids must be distinct")
        if not np.isfinite(weights.data).all():
            raise RankingError("item regression weights must be finite")
        if history < 1:
            raise RankingError(f"history must be >= 1, got {history}")
        self.item_ids = tuple(item_ids)
        self.index = {j: i for i, j in enumerate(self.item_ids)}
        self.weights = weights.tocsr()
        self.l2 = float(l2)
        self.history = int(history)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def fit(cls, profiles: Iterable[Iterable[str]], l2: float = 500.0, top_k: int = 200,
            max_items: int = 10_000, history: int = 200) -> "ItemRegression":
        """Fit on users' profiles (each the ids of the items one user interacted with).

        Only the ``max_items`` items in most profiles are modelled; each item keeps its ``top_k``
        largest weights by magnitude.
        """
        if l2 <= 0:
            raise RankingError(f"the item regression's l2 must be > 0 (it keeps XᵀX + λI invertible), got {l2}")
        if top_k < 1 or max_items < 1:
            raise RankingError(f"top_k and max_items must be >= 1, got {top_k} and {max_items}")
        rows = [list(dict.fromkeys(p)) for p in profiles]
        counts: dict[str, int] = {}
        for p in rows:
            for j in p:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            raise RankingError("no user has interacted with anything: nothing to fit an item regression on")
        kept = sorted(counts, key=lambda j: (-counts[j], j))[:max_items]
        if len(kept) < len(counts):
            log.warning("item regression: modelling the %d most watched of %d items (max_items); the rest score 0. "
                        "Raise AVREC_RANKING__ITEM_REGRESSION_MAX_ITEMS if the fit machine has the memory "
                        "(one float64 n x n matrix: 800 MB at 10,000 items)", len(kept), len(counts))
        index = {j: i for i, j in enumerate(kept)}
        n = len(kept)
        indptr, cols = [0], []
        for p in rows:
            cols.extend(index[j] for j in p if j in index)
            indptr.append(len(cols))
        x = csr_matrix((np.ones(len(cols)), np.asarray(cols, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                       shape=(len(rows), n))
        b = ease_weights((x.T @ x).toarray(), l2)
        k = min(top_k, n - 1)
        if k < 1:
            return cls(kept, csr_matrix((n, n), dtype=np.float32), l2, history)
        cols = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, 1024):  # row blocks: the |b| temporaries stay small
            block = np.abs(b[start:start + 1024])
            cols[start:start + len(block)] = np.argpartition(block, n - k, axis=1)[:, n - k:]
        r = np.repeat(np.arange(n), k)
        vals = b[r, cols.ravel()].astype(np.float32)
        keep = vals != 0
        sparse = csr_matrix((vals[keep], (r[keep], cols.ravel()[keep])), shape=(n, n), dtype=np.float32)
        log.info("item regression fit: %d users x %d items, l2 %g, %d weights kept", len(rows), n, l2, sparse.nnz)
        return cls(kept, sparse, l2, history)

    @staticmethod
    def _view_weights(n: int) -> np.ndarray:
        """``2 x n`` weights of a history's ``n`` most recent items (column 0 the newest), one row per view."""
        r = np.arange(n, dtype=np.float64)
        return np.vstack([np.ones(n), 0.5 ** (r / _HALF_LIFE)])

    def views(self, history: Reversible[str], item_ids: Sequence[str]) -> np.ndarray:
        """``len(item_ids) x len(VIEW_NAMES)`` scores Σ_h w(h) B[h, j] over the last ``history`` distinct
        items of ``history`` (oldest first, as ``UserState.seen`` holds it); unmodelled items add and get 0."""
        out = np.zeros((len(item_ids), len(VIEW_NAMES)))
        recent: list[int] = []
        ranks: list[int] = []
        seen: set[str] = set()
        for h in reversed(history):
            if len(seen) == self.history:
                break
            if h in seen:
                continue
            seen.add(h)
            i = self.index.get(h)
            if i is not None:
                recent.append(i)
                ranks.append(len(seen) - 1)
        if not recent or not item_ids:
            return out
        w = self._view_weights(max(ranks) + 1)[:, ranks]  # rank = position among distinct recent items
        scores = np.asarray(self.weights[recent].T @ w.T)  # n_items x views
        cols = np.fromiter((self.index.get(j, -1) for j in item_ids), dtype=np.int64, count=len(item_ids))
        known = cols >= 0
        out[known] = scores[cols[known]]
        return out

    def to_dict(self) -> dict[str, Any]:
        w = self.weights
        return {"items": list(self.item_ids), "l2": self.l2, "history": self.history,
                "indptr": _b64(w.indptr.astype(np.int64)), "indices": _b64(w.indices.astype(np.int32)),
                "data": _b64(w.data.astype(np.float32))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ItemRegression":
        try:
            items = [str(j) for j in data["items"]]
            n = len(items)
            indptr = _unb64(data["indptr"], np.int64)
            indices = _unb64(data["indices"], np.int32)
            values = _unb64(data["data"], np.float32)
            if len(indptr) != n + 1 or indptr[0] != 0 or indptr[-1] != len(indices) or len(indices) != len(values) \
                    or (np.diff(indptr) < 0).any() or (len(indices) and not (0 <= indices.min() <= indices.max() < n)):
                raise StateFormatError("item regression arrays are inconsistent")
            weights = csr_matrix((values, indices, indptr), shape=(n, n))
            l2, history = float(data["l2"]), int(data["history"])
            if not math.isfinite(l2):
                raise StateFormatError("item regression l2 must be finite")
            return cls(items, weights, l2, history)
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RankingError) as exc:
            raise StateFormatError(f"cannot read the item regression: {exc}") from exc
