"""The methods compared under one protocol: the live hybrid, five baselines, and EASE (research).

Each method answers ``recommend(user, now, k)`` with item indices, best first,
from the state *before* the event being predicted, and is told every event
afterwards through ``observe``. All of them filter what the user has already
interacted with or hidden (the hybrid's own rule), so none wins by repeating
items the protocol can never count as hits.

``Hybrid`` gathers its candidates with the live worker's own
``streams.ranking.gather_candidates`` (through ``state.replay_candidates``, which
``avrec ranker fit`` uses too), with one substitution: the ANN source is an exact NumPy top-N over the
uploaded items instead of a Milvus search (Milvus returns the same neighbours up
to its index's recall, which is ~1 at a few thousand items). Like Milvus, that
search does not know what the user has seen: seen items come back and are
dropped inside ``recommend``, so a heavy user gets fewer fresh ANN candidates,
exactly as live.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from streams.evaluation.dataset import Event
from streams.evaluation.state import (Catalogue, CoreState, excluded, feature_context, replay_candidates,
                                     top_k)
from streams.ranking import Candidates, RankingSettings, event_weight, history_ids, recommend, user_vector
from streams.ranking.item_regression import ease_weights
from streams.ranking.learned import LinearRanker, learned_scores
from streams.training.learner import RankerLearner

log = logging.getLogger(__name__)

GENERIC_REASON = "recommended for you"  # recommend()'s fallback: explains nothing, so not counted


class Method(Protocol):
    name: str
    core: CoreState

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        """(item indices best first, number of them with a specific reason or None if the method has none)."""

    def observe(self, ev: Event) -> None: ...

    def start_test(self) -> None: ...

    def tick(self, n_test_seen: int) -> None: ...


class _Base:
    name = "base"

    def __init__(self, core: CoreState, cat: Catalogue) -> None:
        self.core = core
        self.cat = cat
        self.index = {iid: j for j, iid in enumerate(cat.ids)}

    def observe(self, ev: Event) -> None:
        pass

    def start_test(self) -> None:
        pass

    def tick(self, n_test_seen: int) -> None:
        pass

    def _masked(self, scores: np.ndarray, user: str) -> np.ndarray:
        s = np.where(self.cat.available, scores, -np.inf)
        ex = excluded(self.core.users.get(user), self.index)
        if ex:
            s[ex] = -np.inf
        return s


class MostPop(_Base):
    """Most interactions so far (any type), unseen by the user."""

    name = "mostpop"

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        s = self._masked(self.cat.counts.astype(np.float64), user)
        s[self.cat.counts <= 0] = -np.inf  # never interacted with: no popularity to rank by
        return top_k(s, k).tolist(), None


class DecayedPop(_Base):
    """The live trending counter (exponential decay, ``trending_half_life_s``), unseen by the user."""

    name = "decayedpop"

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        state = self.core.users.get(user)
        skip = set(excluded(state, self.index))
        n = len(self.core.trending)
        m = min(n, k + len(skip))  # enough that k survive the filter
        out = []
        for iid, _ in self.core.trending.top(m, now):
            j = self.index[iid]
            if j not in skip and self.cat.available[j]:
                out.append(j)
                if len(out) == k:
                    break
        return out, None


class ItemKNN(_Base):
    """Item-kNN over the live co-occurrence store: Σ over the user's recent history of cosine-normalised counts."""

    name = "itemknn"
    # "liked": the user's positive items (what the store pairs); "watched": every item they
    # interacted with, disliked ones too (``UserState.seen``, in order), as the learned ranker's
    # "watched" features read it: the baseline gets the same context.
    profile = "liked"

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        state = self.core.users.get(user)
        if self.profile == "watched":
            hist = list(state.seen) if state is not None else []
        else:
            hist = history_ids(state)
        if not hist:
            return [], None
        skip = [self.cat.ids[j] for j in excluded(state, self.index)]
        # Plain item-kNN: every item of the pair window counts the same, whatever recency
        # weighting and scoring window the live settings give the hybrid.
        cooc = self.core.cooc
        scored = cooc.score_candidates(hist, k, exclude=skip, recency_half_life=0.0, score_window=cooc.window)
        return [self.index[i] for i, _ in scored], None


class ItemKNNWatched(ItemKNN):
    """Item-kNN as above, scoring against the user's last items of any kind (disliked ones too)."""

    name = "itemknn-watched"
    profile = "watched"


class ContentOnly(_Base):
    """Cosine between the live taste vector and every item vector (exact), unseen by the user."""

    name = "content"

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        u = user_vector(self.core.users.get(user))
        if u is None:
            return [], None
        idx, mat = self.cat.available_matrix()
        s = np.full(len(self.cat.ids), -np.inf)
        s[idx] = mat @ u
        return top_k(self._masked(s, user), k).tolist(), None


class _Refitted(_Base):
    """A model fit on everything so far when the test starts, then every ``refit_every`` test events."""

    refit_every = 1

    def start_test(self) -> None:
        self._fit()

    def tick(self, n_test_seen: int) -> None:
        if n_test_seen > 0 and n_test_seen % self.refit_every == 0:
            self._fit()

    def _fit(self) -> None:
        raise NotImplementedError


class ALS(_Refitted):
    """Implicit-feedback ALS (``implicit``), refit every ``refit_every`` test events on everything so far.

    Confidence of (user, item) = ``alpha`` × the sum of the user's positive event
    weights on it (the live ``event_weights``: a like counts 1, a view 0.3);
    negative events add nothing. Between refits a user's factors are those of the
    last fit, or, with ``fold_in``, re-solved from the user's current row against
    the fixed item factors (what ``recalculate_user`` does), so events since the
    last fit count. Users and items unknown at the last fit get no scores.
    """

    name = "als"

    def __init__(self, core: CoreState, cat: Catalogue, refit_every: int, factors: int = 64,
                 regularization: float = 0.05, alpha: float = 10.0, iterations: int = 15,
                 fold_in: bool = False, seed: int = 0) -> None:
        super().__init__(core, cat)
        self.refit_every = max(1, int(refit_every))
        self.factors, self.reg, self.alpha, self.iterations = factors, regularization, alpha, iterations
        self.fold_in = fold_in
        self.seed = seed
        if fold_in:
            self.name = "als-foldin"
        self.rows: dict[str, dict[int, float]] = {}  # user -> item -> summed positive weight
        self.user_index: dict[str, int] = {}
        self.user_f: np.ndarray | None = None
        self.item_f: np.ndarray | None = None
        self.known_items = np.zeros(len(cat.ids), dtype=bool)
        self.yty: np.ndarray | None = None
        self.fits = 0
        self.fit_seconds = 0.0

    def observe(self, ev: Event) -> None:
        w = event_weight(ev.type, None, self.core.cfg)
        if w > 0:
            row = self.rows.setdefault(ev.user_id, {})
            row[ev.item] = row.get(ev.item, 0.0) + w

    def _fit(self) -> None:
        import time

        from implicit.cpu.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits

        t0 = time.perf_counter()
        users = list(self.rows)
        self.user_index = {u: i for i, u in enumerate(users)}
        indptr, cols, vals = [0], [], []
        for u in users:
            row = self.rows[u]
            cols.extend(row)
            vals.extend(row.values())
            indptr.append(len(cols))
        n_items = len(self.cat.ids)
        m = csr_matrix((np.asarray(vals, np.float32), np.asarray(cols, np.int64), np.asarray(indptr, np.int64)),
                       shape=(len(users), n_items))
        # implicit runs its own threads; a BLAS thread pool under them oversubscribes the cores
        # (implicit warns about exactly this), so BLAS is limited to one thread, including the
        # BLAS that scipy/implicit may only just have loaded above.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.reg, alpha=self.alpha,
                                            iterations=self.iterations, random_state=self.seed)
            model.fit(m, show_progress=False)
        self.user_f = np.asarray(model.user_factors, dtype=np.float64)
        self.item_f = np.asarray(model.item_factors, dtype=np.float64)
        self.known_items = np.asarray(m.getnnz(axis=0) > 0)
        self.yty = self.item_f.T @ self.item_f
        self.fits += 1
        self.fit_seconds += time.perf_counter() - t0
        log.debug("ALS fit %d: %d users x %d items, %.2f s", self.fits, len(users), n_items,
                  time.perf_counter() - t0)

    def _user_factor(self, user: str) -> np.ndarray | None:
        if self.item_f is None:
            return None
        if not self.fold_in:
            i = self.user_index.get(user)
            return None if i is None else self.user_f[i]
        row = self.rows.get(user)
        if not row:
            return None
        items = np.fromiter(row, dtype=np.int64)
        conf = self.alpha * np.fromiter(row.values(), dtype=np.float64)
        keep = self.known_items[items]
        if not keep.any():
            return None
        y, c = self.item_f[items[keep]], conf[keep]
        # Hu et al.: (YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u, with p_u = 1 on the row's items.
        a = self.yty + (y.T * (c - 1.0)) @ y + self.reg * np.eye(self.factors)
        return np.linalg.solve(a, y.T @ c)

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        x = self._user_factor(user)
        if x is None:
            return [], None
        s = self.item_f @ x
        s[~self.known_items] = -np.inf
        return top_k(self._masked(s, user), k).tolist(), None


class EASE(_Refitted):
    """EASE (Steck, 2019) on the live co-occurrence store: a research method, not one of the baselines.

    Item-item weights from a ridge regression of each item on all the others,
    ``B = I − P / diag(P)`` with ``P = (G + λI)⁻¹`` and ``diag(B) = 0``, where the
    Gram matrix ``G`` is the store's pair counts with the popularities on its
    diagonal (rows are symmetrised: pruning may have dropped one direction). Where
    cosine item-kNN scores a neighbour by its marginal co-occurrence, EASE keeps
    only what a history item says about a candidate *beyond* the other items, a
    textbook way to denoise co-occurrence. Scores sum ``w_h · B[h]`` over the
    history exactly as the hybrid weighs it (recency half-life, scoring window).
    Refit every ``refit_every`` test events; dense, so it refuses catalogues above
    ``MAX_ITEMS``.
    """

    name = "ease"
    MAX_ITEMS = 20_000  # a dense float64 inverse: 3.2 GB and minutes at this size

    def __init__(self, core: CoreState, cat: Catalogue, refit_every: int, lam: float = 500.0) -> None:
        super().__init__(core, cat)
        if len(cat.ids) > self.MAX_ITEMS:
            raise ValueError(f"ease builds a dense {len(cat.ids)}-square item matrix; it supports at most "
                             f"{self.MAX_ITEMS} items (leave it out of --methods for this dataset)")
        self.refit_every = max(1, int(refit_every))
        self.lam = float(lam)
        self.weights: np.ndarray | None = None

    def _fit(self) -> None:
        n = len(self.cat.ids)
        gram = np.zeros((n, n))
        cooc = self.core.cooc
        for i, row in cooc.counts.items():
            a = self.index[i]
            for j, c in row.items():
                gram[a, self.index[j]] = c
        gram = np.maximum(gram, gram.T)
        for i, p in cooc.pops.items():
            gram[self.index[i], self.index[i]] = p
        self.weights = ease_weights(gram, self.lam)

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        hist = history_ids(self.core.users.get(user))
        if not hist or self.weights is None:
            return [], None
        recent = list(dict.fromkeys(reversed(hist)))[: self.core.cooc.score_window]  # newest first, distinct
        s = np.zeros(len(self.cat.ids))
        for h, w in zip(recent, self.core.cooc.history_weights(len(recent))):
            s += w * self.weights[self.index[h]]
        s[s <= 0] = -np.inf  # no positive evidence: not recommended (as item-kNN)
        return top_k(self._masked(s, user), k).tolist(), None


class Hybrid(_Base):
    """The live recommender: the worker's candidate sources, then ``streams.ranking.recommend``.

    With ``fusion = "learned"`` the live worker ranks with a ranker fitted on the
    interactions logged so far (``avrec ranker fit``). The replay does the same:
    ``learn`` is called for the events of the last part of the training segment,
    before each is applied, and makes one example of the candidate pool the user
    had then and the item they chose (``streams.training.RankerLearner``, the
    learner ``avrec ranker fit`` drives); ``start_test`` fits the ranker on them, and
    it stays fixed through the test, as a deployed ranker does. A ``ranker``
    passed in (live mode: the one the worker loaded) is used as is.
    """

    def __init__(self, core: CoreState, cat: Catalogue, cfg: RankingSettings, name: str = "hybrid",
                 ranker: LinearRanker | None = None) -> None:
        super().__init__(core, cat)
        self.cfg = cfg
        self.name = name
        self.ranker = ranker
        self.learns = cfg.fusion == "learned" and ranker is None
        self.learner = RankerLearner(cfg, name)

    def candidates(self, user: str, now: float) -> Candidates:
        """What ``Recommender.lists_for`` gathers for one user (ANN from exact search, see the module doc)."""
        return replay_candidates(self.core, self.cat, self.cfg, user, now)

    def learned(self, user: str, now: float, cand: Candidates) -> dict[str, float] | None:
        """The fitted ranker's scores of ``cand`` (None: no ranker, or another fusion)."""
        if self.cfg.fusion != "learned" or self.ranker is None:
            return None
        return learned_scores(self.ranker, feature_context(self.core, self.cat, user, now), cand)

    def learn(self, ev: Event) -> None:
        """One training example from the state just before ``ev`` (call it before the event is applied)."""
        if not self.learns:
            return
        self.learner.learn(self.core.users, feature_context(self.core, self.cat, ev.user_id, ev.ts),
                           self.candidates(ev.user_id, ev.ts), self.cat.ids[ev.item])

    def start_test(self) -> None:
        if self.learns:
            self.ranker = self.learner.fit(self.core.users)

    def recommend(self, user: str, now: float, k: int) -> tuple[list[int], int | None]:
        state = self.core.users.get(user)
        cand = self.candidates(user, now)
        recs = recommend(state, cand, self.cat.infos, now, self.cfg, k=k, learned=self.learned(user, now, cand))
        n_reasons = sum(1 for r in recs if any(x != GENERIC_REASON for x in r.reasons))
        return [self.index[r.item_id] for r in recs], n_reasons
