"""Item-item co-occurrence ("viewers of X also watched Y"), stored as plain mappings.

Two mappings hold the state (plain dicts, in every worker's item-state replica
and in the offline evaluation alike, updated by the same item ops:
``streams/ranking/item_ops.py``):

* ``counts[i] = {j: c_ij}``: how many users positively interacted with both i and j
  (pairs formed within a user's recent positive window);
* ``pops[i] = p_i``: how many users positively interacted with i.

Rows are read, copied, changed and written back whole (``counts[i] = row``), so
a mapping that records changes on assignment only could back them too.

Similarity is cosine-normalised: ``sim(i, j) = c_ij / sqrt(p_i * p_j)``, so a
globally popular item does not become everyone's neighbour. Each row keeps at
most ``max_neighbors`` entries (the highest counts), so after pruning the
relation may be asymmetric; scoring only reads the history item's row.

Scoring a user's candidates sums the similarities over their last
``score_window`` (default ``window``) distinct history items. With
``recency_half_life = h > 0`` the r-th most recent of them (r = 0 the newest)
counts ``0.5 ** (r / h)``: what a user just watched says more about what they
watch next than what they watched ten items ago (the standard recency weighting
of sequential item-kNN). ``h = 0`` weighs them all equally (plain item-kNN).

With ``pair_half_life = h > 0`` a new item's pair with the d-th most recent
history item (d = 0 the one just before it) adds ``0.5 ** (d / h)`` instead of 1
(distance-weighted counting; off by default).

Scoring runs for every list the live worker ranks, so it reads the rows as
cached NumPy arrays (:mod:`streams.ranking.cooc_rows`, valid because rows are
replaced whole, never changed in place: keep it so) and gives the plain loop's
results to the bit; the loop still scores inputs too small for NumPy to pay off.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Iterable, MutableMapping, Sequence

import numpy as np

from streams.ranking.cooc_rows import CodedPops, RowArrays
from streams.ranking.exceptions import RankingError, StateFormatError


def _unique_codes(codes: np.ndarray, n_codes: int,
                  scratch: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uniq, inv, where)``: the distinct codes (in no particular order),
    ``codes == uniq[inv]``, and ``where`` (indexed by code) holding, for each code that occurs, a position
    of it in ``codes`` (garbage for the others).

    O(len(codes)) with a scatter into a scratch array as long as the interner, instead of
    np.unique's sort: whichever duplicate's write lands last, every position of a code reads the
    same one back, and exactly that position reads itself.
    """
    n = len(codes)
    pos = np.arange(n, dtype=np.intp)
    # Uninitialised: only what is written here is read, so a reused ``scratch`` (at least n_codes long)
    # does as well; a fresh array as long as a 100k-item interner (~0.8 MB) is mmap'd and page-faulted
    # on every call.
    where = scratch[:n_codes] if scratch is not None and len(scratch) >= n_codes else np.empty(n_codes, np.intp)
    where[codes] = pos
    rep = where[codes]
    first = rep == pos
    local = np.cumsum(first, dtype=np.intp) - 1
    return codes[first], local[rep], where


class CoOccurrence:
    """Symmetric co-occurrence counts with bounded rows; see the module docstring."""

    def __init__(
        self,
        counts: MutableMapping[str, dict[str, float]] | None = None,
        pops: MutableMapping[str, float] | None = None,
        max_neighbors: int = 100,
        window: int = 20,
        recency_half_life: float = 0.0,
        score_window: int | None = None,
        pair_half_life: float = 0.0,
    ) -> None:
        if max_neighbors < 1 or window < 1:
            raise RankingError("max_neighbors and window must be >= 1")
        if not (recency_half_life >= 0 and math.isfinite(recency_half_life)):
            raise RankingError(f"recency_half_life must be >= 0 and finite, got {recency_half_life!r}")
        # The rows as arrays for vectorised scoring; valid while rows are replaced whole (see above).
        self._row_arrays = RowArrays()
        self.counts: MutableMapping[str, dict[str, float]] = {} if counts is None else counts
        self.pops = {} if pops is None else pops
        self.max_neighbors = int(max_neighbors)
        self.window = int(window)
        self.recency_half_life = float(recency_half_life)
        if not (pair_half_life >= 0 and math.isfinite(pair_half_life)):
            raise RankingError(f"pair_half_life must be >= 0 and finite, got {pair_half_life!r}")
        self.pair_half_life = float(pair_half_life)
        # How many recent distinct history items score candidates (default: the pair window).
        self.score_window = self.window if not score_window else int(score_window)

    @property
    def pops(self) -> MutableMapping[str, float]:
        """Popularity per item. A plain dict given here is copied into a :class:`CodedPops` (the same
        dict, plus each value by interner code for scoring); another mapping (a table) is kept as is."""
        return self._pops

    @pops.setter
    def pops(self, value: MutableMapping[str, float]) -> None:
        self._pops = CodedPops(self._row_arrays, value) if type(value) is dict else value

    def pops_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """``float(pops.get(j, 0.0))`` of each of ``item_ids``, as float64 (one C-level pass)."""
        return np.fromiter(map(self._pops.get, item_ids, itertools.repeat(0.0)), dtype=np.float64,
                           count=len(item_ids))

    # -- updates -------------------------------------------------------------------
    def add(self, history_item_ids: Sequence[str], new_item_id: str, weight: float = 1.0) -> int:
        """Count one user's first positive interaction with ``new_item_id``.

        Pairs it with each distinct item among the last ``window`` of
        ``history_item_ids`` (oldest first; ``new_item_id`` itself is skipped)
        and adds ``weight`` to its popularity. Call it once per (user, item):
        :func:`streams.ranking.ingest.ingest_interaction` does exactly that.
        The same change as the ops of :func:`streams.ranking.item_ops.pair_ops`
        applied here (the live worker ships those ops to the items' owners).
        Returns the number of pairs updated.
        """
        from streams.ranking.item_ops import apply_op, pair_ops  # item_ops builds on this module

        ops = pair_ops(self, history_item_ids, new_item_id, weight)
        for op in ops:
            apply_op(op, self, None)
        return len(ops) - 1

    def bounded(self, row: dict[str, float]) -> dict[str, float]:
        """``row`` pruned to ``max_neighbors`` entries once it outgrows them by a quarter (may be ``row`` itself)."""
        # Prune with 25% slack so the sort runs once per ~max/4 new neighbours,
        # not on every add to a full row. Keeps the highest counts; among equal
        # counts the newest neighbours (inserted last) survive, giving new items a chance.
        if len(row) <= self.max_neighbors + self.max_neighbors // 4:
            return row
        ranked = sorted(enumerate(row.items()), key=lambda t: (t[1][1], t[0]), reverse=True)
        keep = sorted(ranked[: self.max_neighbors])  # back to insertion order
        return {j: c for _, (j, c) in keep}

    def remove(self, item_id: str) -> None:
        """Forget ``item_id`` (taken down): its row, its popularity, and its entries in its neighbours' rows."""
        row = self.counts.get(item_id)
        if row is not None:
            for j in row:
                jrow = self.counts.get(j)
                if jrow is not None and item_id in jrow:
                    jrow = dict(jrow)
                    del jrow[item_id]
                    self.counts[j] = jrow
            del self.counts[item_id]
        if item_id in self.pops:
            del self.pops[item_id]

    # -- per-row access (table-friendly) ---------------------------------------------
    def row(self, item_id: str) -> dict[str, float]:
        """A copy of ``item_id``'s raw counts row ({} if none)."""
        return dict(self.counts.get(item_id, {}))

    def merge_row(self, item_id: str, row: dict[str, float], pop: float | None = None) -> None:
        """Add another shard's raw counts (and popularity) for ``item_id`` into this one."""
        mine = dict(self.counts.get(item_id, {}))
        for j, c in row.items():
            mine[j] = mine.get(j, 0.0) + float(c)
        self.counts[item_id] = self.bounded(mine)
        if pop is not None:
            self.pops[item_id] = float(self.pops.get(item_id, 0.0)) + float(pop)

    # -- queries -------------------------------------------------------------------
    def neighbors(self, item_id: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` most similar items to ``item_id`` by ``c_ij / sqrt(p_i p_j)``, best first."""
        row = self.counts.get(item_id)
        pops = self._pops
        pi = float(pops.get(item_id, 0.0))
        if not row or pi <= 0 or n <= 0:
            return []
        out = []
        for j, c in row.items():
            pj = float(pops.get(j, 0.0))
            if pj > 0:
                out.append((j, c / math.sqrt(pi * pj)))
        out.sort(key=lambda t: (-t[1], t[0]))
        return out[:n]

    def history_weights(self, n_hist: int, recency_half_life: float | None = None) -> list[float]:
        """Weights of the ``n_hist`` most recent distinct history items, newest first (see the module doc)."""
        h = self.recency_half_life if recency_half_life is None else float(recency_half_life)
        if h <= 0:
            return [1.0] * n_hist
        return [0.5 ** (r / h) for r in range(n_hist)]

    def score_candidates_explained(
        self,
        history_item_ids: Sequence[str],
        n: int,
        exclude: Iterable[str] = (),
        recency_half_life: float | None = None,
        score_window: int | None = None,
    ) -> list[tuple[str, float, str]]:
        """Like :meth:`score_candidates`, plus the history item that contributed most to each.

        Ties for the most contributing item go to the most recent history item. The
        same results as the plain loop (``tests/cooc_reference.py``, the tests' oracle), to the
        bit: every part ``c_hj * (w_h / sqrt(p_h))`` is the same float product, and
        each candidate's parts are summed in the same order (most recent h first).
        """
        if n <= 0:
            return []
        hist = self._recent_history(history_item_ids, score_window)
        pops_get = self.pops.get  # this runs for every list the live worker ranks
        # The rows that contribute, most recent first: (history index, item, row, w_h / sqrt(p_h)).
        used: list[tuple[int, str, dict[str, float], float]] = []
        entries = 0
        for r, (h, w) in enumerate(zip(hist, self.history_weights(len(hist), recency_half_life))):
            row = self.counts.get(h)
            ph = float(pops_get(h, 0.0))
            if not row or ph <= 0:
                continue
            used.append((r, h, row, w / math.sqrt(ph)))
            entries += len(row)
        if not used:
            return []
        if entries < self.array_min_entries:
            return self._score_loop(used, hist, exclude, n)
        return self._score_arrays(used, hist, exclude, n)

    # Below this many row entries (summed over the rows read) the plain loop beats the ~30 us of
    # NumPy calls the array path costs whatever the size; measured crossover ~100 entries (one
    # 125-entry row: loop 70 us, arrays 59 us; two 30-entry rows: loop 21 us, arrays 44 us).
    array_min_entries = 100

    def _recent_history(self, history_item_ids: Sequence[str], score_window: int | None) -> list[str]:
        """The last ``score_window`` distinct history items, most recent first."""
        limit = self.score_window if not score_window else int(score_window)
        hist: list[str] = []
        for h in reversed(history_item_ids):
            if len(hist) == limit:
                break
            if h not in hist:
                hist.append(h)
        return hist

    def _score_loop(self, used: list[tuple[int, str, dict[str, float], float]], hist: list[str],
                    exclude: Iterable[str], n: int) -> list[tuple[str, float, str]]:
        """The plain-Python scoring over the contributing rows (small inputs)."""
        skip = set(hist)
        skip.update(exclude)
        acc: dict[str, float] = {}  # j -> Σ_h w_h c_hj / sqrt(p_h)   (p_j applied once at the end)
        best: dict[str, tuple[float, str]] = {}
        for _, h, row, inv in used:
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
        pops_get = self.pops.get
        out = []
        for j, a in acc.items():
            pj = float(pops_get(j, 0.0))
            if pj > 0:
                out.append((j, a / math.sqrt(pj), best[j][1]))
        # The n best, ties by id: a bounded heap rather than sorting every neighbour.
        return heapq.nsmallest(n, out, key=lambda t: (-t[1], t[0]))

    def _score_arrays(self, used: list[tuple[int, str, dict[str, float], float]], hist: list[str],
                      exclude: Iterable[str], n: int) -> list[tuple[str, float, str]]:
        """The same scoring on the rows' cached arrays (:mod:`streams.ranking.cooc_rows`)."""
        arrays = self._row_arrays
        codes_l, counts_l = [], []
        for _, h, row, _ in used:
            codes, cnt = arrays.get(h, row)
            codes_l.append(codes)
            counts_l.append(cnt)
        arrays.maybe_sweep(self.counts)
        lens = np.fromiter((len(c) for c in codes_l), dtype=np.intp, count=len(used))
        codes = np.concatenate(codes_l)
        # Each part is the same product c * (w_h / sqrt(p_h)) as the loop's, element by element.
        parts = np.concatenate(counts_l) * np.repeat(np.array([u[3] for u in used]), lens)
        uniq, inv, where = _unique_codes(codes, len(arrays.code), arrays.scratch(len(arrays.code)))
        # bincount adds the weights in input order, i.e. most recent row first, from 0.0: the
        # loop's sums to the bit (np.add.reduceat would not: it may sum pairwise).
        acc = np.bincount(inv, weights=parts, minlength=len(uniq))
        keep = np.ones(len(uniq), dtype=bool)
        skip = np.array(arrays.codes_of(itertools.chain(hist, exclude)), dtype=np.intp)
        if len(skip):
            at = where[skip]  # garbage unless the code occurs: then a position holding it
            ok = (at >= 0) & (at < len(codes))
            at = at[ok]
            keep[inv[at[codes[at] == skip[ok]]]] = False
        local = np.flatnonzero(keep)  # candidates: indices into uniq
        pops = self._pops
        if isinstance(pops, CodedPops) and pops.interner is arrays:
            pj = pops.at(uniq[local])  # ids only for the best below, not for every candidate
        else:
            pj = self.pops_of(arrays.names(uniq[local]))
        ok = pj > 0
        if not ok.all():
            local, pj = local[ok], pj[ok]
        scores = acc[local] / np.sqrt(pj)
        # The n best by (-score, id): everything scoring at least the n-th best score (ties at the
        # boundary included), sorted exactly; usually a few more than n.
        m = len(scores)
        top = np.flatnonzero(scores >= np.partition(scores, m - n)[m - n]) if m > n else np.arange(m)
        top_scores = scores[top].tolist()
        top_ids = arrays.names(uniq[local[top]])
        order = sorted(range(len(top_ids)), key=lambda q: (-top_scores[q], top_ids[q]))[:n]
        best = self._best_rows(local[top[order]], len(uniq), inv, parts, lens, used)
        return [(top_ids[q], top_scores[q], hist[r]) for q, r in zip(order, best)]

    @staticmethod
    def _best_rows(chosen: np.ndarray, n_uniq: int, inv: np.ndarray, parts: np.ndarray, lens: np.ndarray,
                   used: list[tuple[int, str, dict[str, float], float]]) -> list[int]:
        """For each of ``chosen`` (indices into the unique candidates), the history index of its largest
        part; among equal parts the most recent row (the loop's strict ``>``)."""
        picked = np.zeros(n_uniq, dtype=bool)
        picked[chosen] = True
        m = picked[inv]
        inv_m, parts_m = inv[m], parts[m]
        hist_m = np.repeat(np.array([u[0] for u in used], dtype=np.intp), lens)[m]
        top_part = np.full(n_uniq, -np.inf)
        np.maximum.at(top_part, inv_m, parts_m)
        tie = parts_m == top_part[inv_m]
        first = np.full(n_uniq, np.iinfo(np.intp).max, dtype=np.intp)
        np.minimum.at(first, inv_m[tie], hist_m[tie])
        return first[chosen].tolist()

    def score_candidates(
        self,
        history_item_ids: Sequence[str],
        n: int,
        exclude: Iterable[str] = (),
        recency_half_life: float | None = None,
        score_window: int | None = None,
    ) -> list[tuple[str, float]]:
        """Top ``n`` items by ``Σ_h w_h c_hj / sqrt(p_h p_j)`` over the last ``score_window`` history items.

        ``w_h`` is the recency weight of history item h (:meth:`history_weights`).
        ``recency_half_life`` and ``score_window`` override the store's own (a
        half-life of 0 weighs every item 1; a window of 0 or None keeps the store's).
        History items themselves and ``exclude`` are left out. Best first, ties by id.
        """
        return [(j, s) for j, s, _ in
                self.score_candidates_explained(history_item_ids, n, exclude, recency_half_life, score_window)]

    # -- serialisation (dict-backed instances) ----------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "max_neighbors": self.max_neighbors,
            "window": self.window,
            "counts": {i: dict(r) for i, r in self.counts.items()},
            "pops": {i: float(p) for i, p in self.pops.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoOccurrence":
        try:
            if data.get("v") != 1:
                raise StateFormatError(f"co-occurrence state version {data.get('v')!r}, expected 1")
            return cls(
                counts={str(i): {str(j): float(c) for j, c in r.items()} for i, r in data["counts"].items()},
                pops={str(i): float(p) for i, p in data["pops"].items()},
                max_neighbors=int(data["max_neighbors"]),
                window=int(data["window"]),
            )
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFormatError(f"cannot read co-occurrence state: {exc!r}") from exc
