"""A learned candidate ranker: a linear softmax model over per-candidate features.

The hand-weighted blend in :mod:`streams.ranking.recommend` adds each source's
score normalised to [0, 1] with fixed weights. This module instead *learns* how
to combine the signals from logged interactions: each interaction is one
example, "of the candidates the user had just before it, this is the one they
chose", and the model is a multinomial logit over the candidate pool,

    P(j | user) = exp(z_j · w) / Σ_k exp(z_k · w),

with ``z_j`` the standardised features of candidate j (:data:`FEATURES`). It is
fit by L-BFGS on the mean negative log-likelihood plus an L2 penalty. Nothing
in it is tuned to one dataset: the weights come from whatever log it is fit on.

The features only use what the live worker has for every candidate:

* co-occurrence scores of the candidate against the user's history at several
  time scales (:data:`COOC_VIEWS`: every item of the pair window alike, the
  last item alone, and recency half-lives of 1, 4 and 8 items), over two
  histories: the positive items the pairs are counted from, and every item the
  user interacted with (``UserState.seen``, in order), each also as
  ``log1p(10 s)`` so a linear model can use both the score and its order of
  magnitude;
* the item's popularity (the co-occurrence store's count of users), its
  trending score (the live decayed counter), its age since upload;
* the cosine between the user's taste vector and the item's vector;
* how long the user's history is, as ``log1p(n)`` times each popularity
  feature (so the model can lean on popularity for new users and less for
  established ones; on its own it is the same for every candidate of a list and
  would change nothing);
* the item regression's (EASE, :mod:`streams.ranking.item_regression`) score of
  the candidate against the watched history, all of it alike and recency
  weighted, each also as ``sign(s) log1p(10 |s|)``. The regression is fit with
  the ranker and saved in the same file; without one these columns are 0;
* the content cosine divided by ``1 + n`` (n the user's positive items): evidence-aware
  content, so the model can learn how much one like says about the next choice when it is
  all there is (a user's first events), apart from how much it says among many.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Container, Iterable, Mapping, Reversible, Sequence

import numpy as np
import orjson

from streams.ranking.config import RankingSettings
from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.exceptions import RankingError, StateFormatError
from streams.ranking.item_regression import VIEW_NAMES as _EASE_VIEWS, ItemRegression
from streams.ranking.trending import DecayedCounter
from streams.ranking.recommend import Candidates, ItemInfo, PoolScores, eligible_ids, matrix_rows
from streams.ranking.user_state import UserState, history_ids, user_vector

log = logging.getLogger(__name__)

_created_at = operator.attrgetter("created_at")

# (recency half-life in items, how many recent distinct history items); half-life 0 = all alike.
COOC_VIEWS: tuple[tuple[float, int], ...] = ((0.0, 10), (0.0, 1), (1.0, 20), (4.0, 20), (8.0, 50))
_VIEW_NAMES = ("flat10", "last", "hl1", "hl4", "hl8")
# Each view over two histories: the user's positive items (what co-occurrence pairs are counted
# from) and every item they interacted with, disliked ones included ("watched": what a user just
# watched predicts what they watch next, whatever they thought of it).
_COOC_COLUMNS = tuple(f"{hist}_{v}" for hist in ("liked", "watched") for v in _VIEW_NAMES)
FEATURES: tuple[str, ...] = (
    *(f"cooc_{c}" for c in _COOC_COLUMNS),
    *(f"log_cooc_{c}" for c in _COOC_COLUMNS),
    "log_popularity", "log_trending", "log_age_h", "content_cos",
    "log_popularity_x_history", "log_trending_x_history",
    *(f"ease_watched_{v}" for v in _EASE_VIEWS),
    *(f"slog_ease_watched_{v}" for v in _EASE_VIEWS),
    "content_cos_x_cold",
)  # fmt: skip
MODEL_VERSION = 3  # 2: the item regression's features and weights; 3: content_cos_x_cold
# Version 2 files lack only the last feature: they load with a weight of 0 for it (the same scores).
_V2_FEATURES = FEATURES[:-1]


def _recent_distinct(item_ids: Reversible[str], limit: int) -> list[str]:
    """The ``limit`` most recent distinct ids, most recent first (``item_ids`` is oldest first)."""
    out: list[str] = []
    seen: set[str] = set()
    for h in reversed(item_ids):
        if len(out) == limit:
            break
        if h not in seen:
            seen.add(h)
            out.append(h)
    return out


def history_view_weights(histories: Sequence[Reversible[str]],
                         views: Sequence[tuple[float, int]]) -> tuple[dict[str, int], np.ndarray]:
    """``(row_of, weights)``: each distinct recent history item's row number (in first-seen order over
    the histories) and its weight under each (history, view), history-major: ``w_v(r)`` of
    :func:`cooc_views` where the item is history ``a``'s r-th most recent, 0 where it is not in it."""
    limit = max(w for _, w in views)
    recents = [_recent_distinct(h, limit) for h in histories]
    row_of: dict[str, int] = {}
    for recent in recents:
        for h in recent:
            row_of.setdefault(h, len(row_of))
    nv = len(views)
    weights = np.zeros((len(row_of), len(histories) * nv))
    for a, recent in enumerate(recents):
        rows = [row_of[h] for h in recent]
        ranks = np.arange(len(recent))
        for v, (hl, win) in enumerate(views):
            weights[rows, a * nv + v] = np.where(ranks < win, 0.5 ** (ranks / hl) if hl > 0 else 1.0, 0.0)
    return row_of, weights


def cooc_views(cooc: CoOccurrence, histories: Sequence[Reversible[str]], item_ids: Sequence[str],
               views: Sequence[tuple[float, int]] = COOC_VIEWS,
               pops_of_items: np.ndarray | None = None) -> np.ndarray:
    """Cosine co-occurrence scores of ``item_ids`` against some histories, under each view of each, at once.

    Returns ``scores`` (float64) with a row per item and one column per (history, view), history-major:
    ``scores[i, a * len(views) + v] = Σ_r w_v(r) c_{h_r j} / sqrt(p_{h_r} p_j)`` for ``j = item_ids[i]``
    over the distinct items ``h_r`` of history ``a`` (oldest first as given; r = 0 the most recent),
    with ``w_v(r) = 0.5 ** (r / half_life)`` (1 for half-life 0) for ``r < window`` and 0 beyond: what
    :meth:`CoOccurrence.score_candidates` computes for one view. Each history item's row is read once,
    however many histories and views it weighs in, and only entries for ``item_ids`` are kept (the
    live worker pays for this on every list it ranks). The rows come as the store's cached arrays
    (:mod:`streams.ranking.cooc_rows`) and are matched to ``item_ids`` by code in one pass: the same
    floats, added in the same order, as a plain scan of the row dicts (``tests/cooc_reference.py``, the tests' oracle).
    ``pops_of_items``: ``cooc.pops_of(item_ids)`` when the caller has it already.
    """
    row_of, weights = history_view_weights(histories, views)
    nv, n = len(views), len(item_ids)
    arrays = cooc._row_arrays
    codes_l: list[np.ndarray] = []
    counts_l: list[np.ndarray] = []
    used: list[tuple[int, float]] = []  # (weights row, sqrt(p_h)) of each row read
    pops = cooc.pops
    for h, r in row_of.items():
        row = cooc.counts.get(h)
        ph = float(pops.get(h, 0.0))
        if not row or ph <= 0:
            continue
        codes, counts = arrays.get(h, row)
        codes_l.append(codes)
        counts_l.append(counts)
        used.append((r, math.sqrt(ph)))
    arrays.maybe_sweep(cooc.counts)
    ncols = len(histories) * nv
    if not used:
        return np.zeros((n, ncols))
    lens = np.fromiter((len(c) for c in codes_l), dtype=np.intp, count=len(used))
    codes = np.concatenate(codes_l)
    # Each item's position by code, in a buffer as long as the interner that holds -1 everywhere else
    # (ids no row names have no code and match nothing), read at every row entry, then reset. A
    # repeated id: its last position, as the dict keeps it.
    pos = dict(zip(item_ids, range(n)))
    mine_codes = np.fromiter(map(arrays.code.get, pos, itertools.repeat(-1)), dtype=np.intp, count=len(pos))
    mine_pos = np.fromiter(pos.values(), dtype=np.intp, count=len(pos))
    known = mine_codes >= 0
    mine_codes, mine_pos = mine_codes[known], mine_pos[known]
    at = arrays.slots(len(arrays.code))
    at[mine_codes] = mine_pos
    slot = at[codes]
    at[mine_codes] = -1
    ok = slot >= 0
    if not ok.any():
        return np.zeros((n, ncols))
    ii = slot[ok]
    # c / sqrt(p_h) entry by entry, as the scan divides each row's counts.
    part = (np.concatenate(counts_l) / np.repeat(np.array([q for _, q in used]), lens))[ok]
    w = weights[np.repeat(np.array([r for r, _ in used], dtype=np.intp), lens)[ok]]
    # Every (item, column) sum in one bincount over the entries in row order: per bin, the same terms
    # added in the same order as a bincount per column.
    bins = (ii[:, None] * ncols + np.arange(ncols)).ravel()
    out = np.bincount(bins, weights=(part[:, None] * w).ravel(), minlength=n * ncols).reshape(n, ncols)
    pj = cooc.pops_of(item_ids) if pops_of_items is None else pops_of_items
    with np.errstate(divide="ignore"):
        scale = np.where(pj > 0, 1.0 / np.sqrt(np.maximum(pj, 1e-300)), 0.0)
    return out * scale[:, None]


@dataclass
class FeatureContext:
    """What features are computed from, for one user at one moment (all read-only)."""

    state: UserState | None
    cooc: CoOccurrence
    trending: DecayedCounter
    items: Mapping[str, ItemInfo]  # at least every candidate's (upload time, vector)
    now: float


def candidate_pool(state: UserState | None, candidates: Candidates, items: Mapping[str, ItemInfo],
                   taken_down: Container[str] = ()) -> list[str]:
    """Every candidate id of every source that ``recommend`` could list (known, available, not seen,
    hidden or taken down), sorted: the rows a learned ranker scores and learns from."""
    sources = (candidates.ann, candidates.cooc, candidates.fresh, candidates.trending)
    return eligible_ids(state, ([i for i, _ in src] for src in sources), items, taken_down)


def candidate_features(ctx: FeatureContext, item_ids: Sequence[str],
                       item_model: ItemRegression | None = None) -> np.ndarray:
    """The ``len(item_ids) x len(FEATURES)`` feature matrix (float64), rows in ``item_ids`` order
    (the item regression's columns are 0 without ``item_model``)."""
    n = len(item_ids)
    hist = history_ids(ctx.state)
    watched = ctx.state.seen if ctx.state is not None else ()  # an ordered set, oldest first: no copy
    pops = ctx.cooc.pops_of(item_ids)
    cv = cooc_views(ctx.cooc, (hist, watched), item_ids, pops_of_items=pops)
    trend = ctx.trending.score(item_ids, ctx.now) if n else np.zeros(0)
    infos = list(map(ctx.items.__getitem__, item_ids))
    created = np.fromiter(map(_created_at, infos), dtype=np.float64, count=n)
    age_h = np.fmax(0.0, ctx.now - created) / 3600.0  # fmax: a NaN upload time is age 0, as max(0.0, nan)
    cos = np.zeros(n)
    u = user_vector(ctx.state)
    in_matrix = matrix_rows(infos, ctx.items) if u is not None else None  # the worker's item cache: one take
    if in_matrix is not None and in_matrix[0].shape[1] == len(u):
        cos[:] = in_matrix[0].take(in_matrix[1], axis=0) @ u
    elif u is not None:
        rows = [a for a, info in enumerate(infos) if info.vector is not None and len(info.vector) == len(u)]
        if rows:
            cos[rows] = np.stack([np.asarray(infos[a].vector, dtype=np.float32) for a in rows]) @ u
    log_hist = math.log1p(len(hist))
    lpop, ltrend = np.log1p(pops), np.log1p(trend)
    ease = item_model.views(watched, item_ids) if item_model is not None else np.zeros((n, len(_EASE_VIEWS)))
    return np.column_stack([
        cv, np.log1p(10.0 * cv), lpop, ltrend, np.log1p(age_h), cos,
        lpop * log_hist, ltrend * log_hist,
        ease, np.sign(ease) * np.log1p(10.0 * np.abs(ease)),
        cos / (1.0 + len(hist)),
    ])  # fmt: skip


def fit_item_regression(states: Iterable[UserState], cfg: RankingSettings) -> ItemRegression:
    """The item regression over every user's watched items (``UserState.seen``), with the settings' λ and bounds."""
    return ItemRegression.fit((s.seen for s in states), l2=cfg.item_regression_l2,
                              top_k=cfg.item_regression_top_k, max_items=cfg.item_regression_max_items)


def learned_scores(ranker: "LinearRanker", ctx: FeatureContext, candidates: Candidates,
                   taken_down: Container[str] = ()) -> PoolScores:
    """The ranker's score of every candidate ``recommend`` could list (see :func:`candidate_pool`); the
    answer also carries that pool, for ``recommend`` to reuse (:class:`PoolScores`)."""
    pool = candidate_pool(ctx.state, candidates, ctx.items, taken_down)
    scores = ranker.score(candidate_features(ctx, pool, ranker.item_model)).tolist() if pool else ()
    return PoolScores(pool, scores, (ctx.state, candidates, ctx.items, taken_down))


def training_example(ctx: FeatureContext, candidates: Candidates, chosen: str,
                     item_model: ItemRegression | None = None) -> tuple[np.ndarray, int] | None:
    """``(features of the pool, row of the chosen item)`` for an interaction with ``chosen``, from the
    state just *before* it; None when the chosen item was not among the candidates (nothing to learn
    about ranking it)."""
    pool = candidate_pool(ctx.state, candidates, ctx.items)
    try:
        row = pool.index(chosen)
    except ValueError:
        return None
    return candidate_features(ctx, pool, item_model), row


class LinearRanker:
    """Standardised features, one weight each; ``fit`` on (features, chosen row) examples.

    ``item_model`` is the item regression its EASE features are computed with (saved with it).
    """

    def __init__(self, weights: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 item_model: ItemRegression | None = None) -> None:
        d = len(FEATURES)
        if not (weights.shape == mean.shape == scale.shape == (d,)):
            raise RankingError(f"a ranker needs {d} weights, means and scales, got "
                               f"{weights.shape}, {mean.shape}, {scale.shape}")
        if not (np.isfinite(weights).all() and np.isfinite(mean).all() and (scale > 0).all()):
            raise RankingError("ranker weights, means and scales must be finite (scales > 0)")
        self.weights, self.mean, self.scale = weights, mean, scale
        self.item_model = item_model
        self._fingerprint: str | None = None

    def score(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Each feature's share of :meth:`score`: ``weight_f * (x_f - mean_f) / scale_f`` ([n, d]).

        A row sums to the candidate's score (the model has no intercept: standardising centres the
        features instead), which is what the read API's ``explain=true`` reports.
        """
        return ((features - self.mean) / self.scale) * self.weights

    @classmethod
    def fit(cls, examples: Sequence[tuple[np.ndarray, int]], l2: float = 1e-3,
            max_iter: int = 200, item_model: ItemRegression | None = None) -> "LinearRanker":
        """Maximum likelihood of the chosen rows under the softmax over each example's rows.

        ``examples``: ``(features [n_i x d], chosen row)`` pairs, float32 or float64 (the
        fit computes in float64 either way); ``l2`` penalises the standardised weights.
        ``item_model``: the item regression the ranker will compute its EASE features with.
        """
        from scipy.optimize import minimize

        usable = [(x, int(p)) for x, p in examples if len(x) > 1 and 0 <= int(p) < len(x)]
        if not usable:
            raise RankingError("no usable examples: each needs at least two candidates and the chosen one")
        allx = np.concatenate([x for x, _ in usable])
        mean = allx.mean(0, dtype=np.float64)
        scale = allx.std(0, dtype=np.float64)
        scale[scale < 1e-9] = 1.0
        # All examples in one matrix; softmax sums per example by reduceat over their row ranges.
        z = (allx - mean) / scale
        del allx
        sizes = np.array([len(x) for x, _ in usable])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        chosen = starts + np.array([p for _, p in usable])
        z_chosen = z[chosen].sum(0)
        m = len(usable)

        def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
            s = z @ w
            top = np.repeat(np.maximum.reduceat(s, starts), sizes)
            e = np.exp(s - top)
            den = np.add.reduceat(e, starts)
            total = -(s[chosen] - top[chosen] - np.log(den)).sum()
            grad = -z_chosen + (e / np.repeat(den, sizes)) @ z
            return total / m + l2 * float(w @ w), grad / m + 2 * l2 * w

        res = minimize(nll, np.zeros(len(FEATURES)), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        log.info("ranker fit on %d examples: nll %.4f (%s, %d iterations)", m, res.fun,
                 "converged" if res.success else res.message, res.nit)
        return cls(np.asarray(res.x, dtype=np.float64), mean, scale, item_model=item_model)

    def to_dict(self) -> dict[str, Any]:
        return {"v": MODEL_VERSION, "features": list(FEATURES), "weights": self.weights.tolist(),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "item_model": None if self.item_model is None else self.item_model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LinearRanker":
        try:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("weights", "mean", "scale")}
            if data.get("v") == 2 and list(data["features"]) == list(_V2_FEATURES):
                # A version-2 file scores exactly as before: the new feature gets weight 0.
                for k, fill in (("weights", 0.0), ("mean", 0.0), ("scale", 1.0)):
                    arrays[k] = np.append(arrays[k], fill)
            elif data.get("v") != MODEL_VERSION:
                raise StateFormatError(f"ranker version {data.get('v')!r}, expected {MODEL_VERSION}")
            elif list(data["features"]) != list(FEATURES):
                raise StateFormatError("ranker features differ from this version's; refit it")
            im = data.get("item_model")
            item_model = None if im is None else ItemRegression.from_dict(im)
            return cls(*(arrays[k] for k in ("weights", "mean", "scale")),
                       item_model=item_model)
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"cannot read ranker: {exc!r}") from exc

    def save(self, path: str | Path) -> None:
        """Write the model as JSON, atomically: a worker starting meanwhile reads the old file or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "LinearRanker":
        """The model :meth:`save` wrote; :class:`StateFormatError` names the file and what is wrong with it."""
        try:
            data = orjson.loads(Path(path).read_bytes())
        except OSError as exc:
            raise StateFormatError(f"cannot read the ranker file {path}: {exc.strerror or exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise StateFormatError(f"the ranker file {path} is not JSON ({exc}); refit it with avrec ranker fit") \
                from exc
        if not isinstance(data, dict):
            raise StateFormatError(f"the ranker file {path} holds a {type(data).__name__}, not a ranker")
        try:
            return cls.from_dict(data)
        except (StateFormatError, RankingError) as exc:
            raise StateFormatError(f"the ranker file {path}: {exc}; refit it with avrec ranker fit") from exc

    def fingerprint(self) -> str:
        """12 hex digits naming this exact model (its weights, means, scales and item regression): equal
        models, equal names. Computed once: a ranker is not changed after it is made."""
        if self._fingerprint is None:
            data = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
            self._fingerprint = hashlib.sha256(data).hexdigest()[:12]
        return self._fingerprint

    def summary(self) -> str:
        """One line for logs: the item regression's size and the four weights the model leans on most."""
        im = "none" if self.item_model is None else f"{len(self.item_model)} items"
        top = ", ".join(f"{f} {w:+.2f}" for f, w in self.describe()[:4])
        return f"item regression: {im}; it leans most on {top}"

    def describe(self) -> list[tuple[str, float]]:
        """(feature, standardised weight), largest magnitude first: what the model leans on."""
        return sorted(zip(FEATURES, self.weights.tolist()), key=lambda t: -abs(t[1]))


def load_ranker(cfg: RankingSettings) -> LinearRanker | None:
    """The ranker the settings ask for: None unless ``fusion`` is "learned" and ``ranker_path`` is set.

    Raises :class:`StateFormatError` for a file that cannot be read as a ranker, so a worker
    fails at start rather than ranking with something else than it was told to.
    """
    if cfg.fusion != "learned":
        return None
    if not cfg.ranker_path:
        log.warning("fusion is 'learned' but no ranker is fitted yet (AVREC_RANKING__RANKER_PATH is unset): "
                    "ranking with the weighted blend. Fit one on the logged interactions with "
                    "'avrec ranker fit DATASET --out ranker.json' and point AVREC_RANKING__RANKER_PATH at it.")
        return None
    ranker = LinearRanker.load(cfg.ranker_path)
    log.info("learned ranker loaded from %s (%s)", cfg.ranker_path, ranker.summary())
    return ranker


def published_model_version(base: str, ranker: LinearRanker | None) -> str:
    """The ``model_version`` a list is published with: the settings' name, plus the ranker's fingerprint
    when one ranks (``hybrid-v1+ranker-0123456789ab``), so a consumer can tell which model made a list."""
    return base if ranker is None else f"{base}+ranker-{ranker.fingerprint()}"
