"""Turn candidate lists into one ranked, diversified, explained top-K list for a user.

Pure and deterministic: the same inputs give the same list, whatever order the
candidates arrive in. Nothing here does I/O; the caller fetches candidates (ANN
search, co-occurrence, fresh uploads, trending) and item metadata.

Scoring, for each candidate i that survives filtering (never seen, hidden, taken
down, unavailable or unknown):

* ``ann_i   = (cos(u, v_i) + 1) / 2`` with u the user's taste vector, computed
  for *every* candidate (not only those the ANN search returned) so an item's
  personal relevance does not depend on which list it came from. Without a
  taste vector the similarities in ``candidates.ann`` are used, else 0.
* ``cooc_i  = s_i / max_j s_j`` over the surviving co-occurrence candidates
  (scale-free; min-max would give the weakest real candidate a 0).
* ``trend_i = 1 - r_i / m``, r_i the 0-based rank among the m surviving trending
  candidates: rank-based because raw popularity is heavy-tailed (max-normalising
  would flatten everything but the top item to ~0).
* ``fresh_i = clamp(1 - (now - created_at_i) / fresh_window_s, 0, 1)``, for every
  candidate (freshness is a property of the item, ``ItemInfo.created_at``).
* ``score_i = Σ_s weight_s · norm_s,i``.

With ``fusion = "rrf"`` (reciprocal-rank fusion) only each source's *ranking*
counts: ``norm_s,i = (k0 + 1) / (k0 + 1 + r_s,i)`` with r_s,i the 0-based rank
of i among the candidates source s scores (ANN: every candidate with a
similarity, by cosine; co-occurrence, fresh, trending: those with a positive
score above), ties by id, and 0 for candidates s does not rank; k0 = ``rrf_k``.
A source's best candidate gets 1 whatever the scale of its raw scores, so a
source with compressed scores (cosines of text vectors all near 0.5 after the
mapping) cannot drown one with a long tail (co-occurrence), nor the reverse.

With ``fusion = "learned"`` and a fitted ranker's scores ``s_i`` passed in
(``streams/ranking/learned.py``: a softmax model over per-candidate features,
fit on logged interactions), ``score_i = exp(s_i - max_j s_j)``, the
candidate's probability relative to the best one's; the per-source
contributions are still computed, for the reasons.

Then MMR over the ``mmr_pool`` best by score: repeatedly pick
``argmax λ·rel_i − (1−λ)·max(0, max_{j picked} cos(v_i, v_j))`` with
``rel_i = score_i / max score``, skipping creators that reached ``creator_cap``.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass, field
from typing import Any, Container, Iterable, Mapping, Sequence

import numpy as np

from streams.ranking.config import SOURCES, RankingSettings
from streams.ranking.exceptions import RankingError
from streams.ranking.user_state import UserState, user_vector

TITLE_MAX = 60
# The reason of an exploration slot (a fresh upload placed by RankingSettings.explore_slots).
EXPLORE_REASON = "new upload: exploring"
_VERBS = {"complete": "you finished", "like": "you liked", "share": "you shared"}


@dataclass
class ItemInfo:
    """What recommend() needs to know about an item (candidates and the user's history items)."""

    item_id: str
    creator_id: str | None
    title: str
    vector: Any  # unit-norm [D] (np.ndarray or sequence); None if not indexed
    created_at: float  # unix seconds
    available: bool = True
    modality_vectors: dict[str, Any] | None = None  # e.g. {"audio": ..., "video": ...}; unused by scoring
    # The vector's row in the matrix of the ItemRows this came in (the worker's item cache); -1: none.
    row: int = -1


class ItemRows(dict):
    """item_id -> ItemInfo whose ``row``s index ``matrix``, one ``[rows, D]`` float32 array holding their
    vectors (the worker's item cache, ``streams/services/items.py``). Scoring gathers a pool's vectors
    with one ``take`` from it instead of stacking one array per candidate; a plain dict still works."""

    matrix: np.ndarray | None = None


class PoolScores(dict):
    """Candidate id -> score for every id of ``pool``, in its order: the candidates of ``source`` =
    ``(state, candidates, items, taken_down)`` that :func:`eligible_ids` lets through, sorted (a
    learned ranker's answer, :func:`streams.ranking.learned.learned_scores`). ``recommend`` given
    these scores for the same objects filters its own (possibly truncated) candidate lists by this
    pool instead of running ``eligible_ids`` again: a subset of the full lists, so the same ids, in
    the same order."""

    def __init__(self, pool: list[str], scores: Iterable[float], source: tuple) -> None:
        super().__init__(zip(pool, scores))  # the keys are the pool, in order
        self.source = source

    def pool_of(self, ids: Container[str], state: UserState | None, candidates: "Candidates",
                items: Mapping[str, ItemInfo], taken_down: Container[str]) -> list[str] | None:
        """The eligible ids among ``ids`` (a subset of ``candidates``' ids), sorted; None unless these
        scores were computed for these very objects."""
        src = self.source
        if not (src[0] is state and src[1] is candidates and src[2] is items and src[3] is taken_down):
            return None
        return [i for i in self if i in ids]


@dataclass
class Candidates:
    """Candidate lists from each source: (item_id, score) pairs, any order."""

    ann: list[tuple[str, float]] = field(default_factory=list)  # cosine similarity in [-1, 1]
    cooc: list[tuple[str, float]] = field(default_factory=list)  # CoOccurrence.score_candidates
    fresh: list[tuple[str, float]] = field(default_factory=list)  # (item_id, created_at)
    trending: list[tuple[str, float]] = field(default_factory=list)  # DecayedCounter.top
    # Optional: co-occurrence candidate -> the history item behind it (for its reason).
    cooc_via: dict[str, str] = field(default_factory=dict)
    # Fresh uploads few users have interacted with yet: what the exploration slots draw from.
    explore: list[str] = field(default_factory=list)


@dataclass
class RecommendedItem:
    item_id: str
    score: float  # blended score (before MMR)
    reasons: list[str]  # at least one, strongest first
    sources: dict[str, float] = field(default_factory=dict)  # weight_s * norm_s per source; sums to score
    # A cold user's learned score leaned on content (RankingSettings.cold_start_*): (share, c), the
    # score being ranker_relative ** (1 - share) * c ** share; None where no lean applied.
    content_lean: tuple[float, float] | None = None


@dataclass
class _Pool:
    ids: list[str]
    creators: list[str | None]
    vecs: np.ndarray  # [n, D] float32, unit rows (zero row if no vector)
    sim: np.ndarray | None  # [n] cosine to the user (or provided ANN similarity; NaN = unknown)
    norm: dict[str, np.ndarray]  # source -> normalised score in [0, 1], [n]
    contrib: dict[str, np.ndarray]  # source -> weight * norm, [n]
    score: np.ndarray  # [n]
    lean: float = 0.0  # the cold-start content share applied to ``score`` (0: none)
    content: np.ndarray | None = None  # [n] the content term c of that lean


def _best_per_item(pairs: Sequence[tuple[str, float]], n: int) -> dict[str, float]:
    """Max score per id, truncated to the n best (ties by id) so caller and core agree on the cut."""
    best = dict(pairs)  # C fast path; only lists with repeated ids need the max-per-id loop below
    if len(best) < len(pairs):
        best = _max_per_id(pairs)
    if len(best) > n:
        best = dict(sorted(best.items(), key=lambda t: (-t[1], t[0]))[:n])
    return best


def _max_per_id(pairs: Sequence[tuple[str, float]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for iid, s in pairs:
        s = float(s)
        if iid not in best or s > best[iid]:
            best[iid] = s
    return best


# A per-thread buffer for the [n, D] candidate matrix. A fresh ~0.5 MB array per
# call is above glibc's mmap threshold, and its page faults alone cost ~0.3 ms
# per call (more than the arithmetic). Only ever used within one call; never
# returned to callers.
_scratch = threading.local()


def _scratch_rows(n: int, dim: int) -> np.ndarray:
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.shape[0] < n or buf.shape[1] != dim:
        buf = np.empty((max(n, 512), dim), dtype=np.float32)
        _scratch.buf = buf
    return buf[:n]


def _stack(vectors: list[Any], what: str, scratch: bool = False) -> np.ndarray:
    """[n, D] float32 with unit rows (zero rows for missing vectors)."""
    if vectors and all(isinstance(v, np.ndarray) and v.ndim == 1 for v in vectors):
        dim = vectors[0].shape[0]
        if all(v.shape[0] == dim for v in vectors):  # fast path: one C call
            if scratch:
                return _unit_rows(np.stack(vectors, out=_scratch_rows(len(vectors), dim)))
            return _unit_rows(np.stack(vectors).astype(np.float32, copy=False))
    rows = []
    dim = None
    for v in vectors:
        if v is None:
            rows.append(None)
            continue
        a = np.asarray(v, dtype=np.float32).reshape(-1)
        if dim is None:
            dim = a.shape[0]
        elif a.shape[0] != dim:
            raise RankingError(f"{what} vectors have different dimensions ({dim} and {a.shape[0]})")
        rows.append(a)
    if dim is None:
        return np.zeros((len(vectors), 0), dtype=np.float32)
    zero = np.zeros(dim, dtype=np.float32)
    return _unit_rows(np.stack([zero if r is None else r for r in rows]))


def _gather(infos: list[ItemInfo], items: Mapping[str, ItemInfo], what: str, scratch: bool = False) -> np.ndarray:
    """[n, D] float32 unit rows of ``infos``' vectors: one ``take`` from the ItemRows matrix when every
    one of them has a row there, else stacked one by one (the same values either way). ``scratch``:
    into the per-thread buffer (the pool's candidates only; see ``_scratch``)."""
    found = matrix_rows(infos, items)
    if found is not None:
        matrix, rows = found
        out = _scratch_rows(len(rows), matrix.shape[1]) if scratch else None
        return _unit_rows(matrix.take(rows, axis=0, out=out))
    return _stack([info.vector for info in infos], what, scratch=scratch)


_row_of = operator.attrgetter("row")


def matrix_rows(infos: list[ItemInfo], items: Mapping[str, ItemInfo]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(matrix, rows)`` when ``items`` is an ItemRows and every one of ``infos`` has a row in its
    matrix (their vectors are ``matrix[rows]``); None otherwise (stack their vectors instead)."""
    matrix = getattr(items, "matrix", None)
    if matrix is None or not infos:
        return None
    rows = np.fromiter(map(_row_of, infos), dtype=np.intp, count=len(infos))
    return (matrix, rows) if rows.min() >= 0 else None


def _unit_rows(m: np.ndarray) -> np.ndarray:
    """Normalise rows in place (``m`` is always a fresh or scratch array, never the caller's).

    Zero rows stay zero; rows with NaN/inf become zero (a corrupt vector must not
    poison every score in the list). Skips the divide when rows are already unit.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", m, m))
    if norms.size and float(np.abs(norms - 1.0).max()) < 1e-5:
        return m  # unit by contract (the common case): nothing to do
    bad = ~np.isfinite(norms)
    if bad.any():
        m[bad] = 0.0
        norms[bad] = 0.0
    norms[norms == 0] = 1.0
    m /= norms[:, None]
    return m


def eligible_ids(state: UserState | None, sources: Iterable[Iterable[str]], items: Mapping[str, ItemInfo],
                 taken_down: Container[str] = ()) -> list[str]:
    """The candidate ids of all ``sources`` that may be listed (known, available, not taken down, not
    seen or hidden by the user), sorted: order-independent, so ties in MMR go to the smallest id.
    The one filter ``recommend`` and the learned ranker's candidate pool share."""
    seen = state.seen if state is not None else ()
    hidden = state.hidden if state is not None else ()
    get = items.get  # runs for every list: one comprehension, no per-id call overhead beyond the checks
    return [iid for iid in sorted(set().union(*sources))
            if (info := get(iid)) is not None and info.available
            and iid not in taken_down and iid not in seen and iid not in hidden]


def _nan_last(x: float) -> float:
    return x if x == x else -np.inf  # NaN != NaN: a NaN score ranks last


def _score_pool(
    state: UserState | None,
    candidates: Candidates,
    items: Mapping[str, ItemInfo],
    now: float,
    cfg: RankingSettings,
    taken_down: Container[str],
    learned: Mapping[str, float] | None = None,
) -> _Pool:
    ann = _best_per_item(candidates.ann, cfg.ann_candidates)
    cooc = _best_per_item(candidates.cooc, cfg.cooc_candidates)
    fresh = _best_per_item(candidates.fresh, cfg.fresh_candidates)
    trend = _best_per_item(candidates.trending, cfg.trending_candidates)

    ids = learned.pool_of(ann.keys() | cooc.keys() | fresh.keys() | trend.keys(), state, candidates, items,
                          taken_down) if isinstance(learned, PoolScores) else None
    if ids is None:
        ids = eligible_ids(state, (ann, cooc, fresh, trend), items, taken_down)
    infos = [items[iid] for iid in ids]
    created_at = [info.created_at for info in infos]
    creators = [info.creator_id for info in infos]
    n = len(ids)
    vecs = _gather(infos, items, "item", scratch=True)
    w = cfg.source_weights

    u = user_vector(state)
    sim: np.ndarray | None
    if u is not None and n:
        if vecs.shape[1] == 0:  # no candidate has a vector: no personal signal
            sim = np.zeros(n)
        elif vecs.shape[1] != u.shape[0]:
            raise RankingError(f"item vectors have {vecs.shape[1]} dims, the user's taste vector {u.shape[0]}")
        else:
            sim = vecs @ u
        ann_norm = (np.clip(sim, -1.0, 1.0) + 1.0) / 2.0
    elif ann:
        sim = np.array([ann.get(i, np.nan) for i in ids], dtype=np.float64)
        ann_norm = np.where(np.isnan(sim), 0.0, (np.clip(np.nan_to_num(sim), -1.0, 1.0) + 1.0) / 2.0)
    else:
        sim = None
        ann_norm = np.zeros(n)

    # nan_to_num: a NaN score from a caller must not poison max() / the blend.
    cooc_raw = np.nan_to_num(np.array([cooc.get(i, 0.0) for i in ids], dtype=np.float64))
    cmax = cooc_raw.max() if n else 0.0
    cooc_norm = np.clip(cooc_raw / cmax, 0.0, 1.0) if cmax > 0 else np.zeros(n)

    trend_norm = np.zeros(n)
    in_trend = [j for j, i in enumerate(ids) if i in trend]
    if in_trend:
        ranked = sorted(in_trend, key=lambda j: (-_nan_last(trend[ids[j]]), ids[j]))
        m = len(ranked)
        trend_norm[ranked] = 1.0 - np.arange(m) / m

    created = np.array(created_at, dtype=np.float64)
    fresh_norm = np.nan_to_num(np.clip(1.0 - (float(now) - created) / cfg.fresh_window_s, 0.0, 1.0))

    norm = {"ann": ann_norm, "cooc": cooc_norm, "fresh": fresh_norm, "trending": trend_norm}
    if cfg.fusion == "rrf":
        # Reciprocal-rank fusion: each source ranks the candidates it has a signal for
        # (ANN: every candidate with a similarity; the others: a positive score), and
        # only that rank counts. norm = (k0 + 1) / (k0 + 1 + rank): 1 for a source's
        # best candidate, 0 for candidates the source does not rank.
        k0 = cfg.rrf_k
        ann_has = np.zeros(n, dtype=bool) if sim is None else ~np.isnan(sim)
        norm = {s: _rrf(norm[s], has, k0) for s, has in
                (("ann", ann_has), ("cooc", cooc_norm > 0), ("fresh", fresh_norm > 0), ("trending", trend_norm > 0))}
    if in_trend and cfg.trending_evidence > 0:
        # Evidence: a trending rank resting on a handful of events counts for little (config.py).
        counts = np.zeros(n)
        for j in in_trend:
            counts[j] = max(0.0, _nan_last(trend[ids[j]]))
        norm["trending"] = norm["trending"] * (counts / (counts + cfg.trending_evidence))
    contrib = {s: getattr(w, s) * norm[s] for s in SOURCES}
    if cfg.fusion == "learned" and learned is not None:
        score = _relative_likelihood(np.array([learned.get(i, -np.inf) for i in ids], dtype=np.float64))
        blended = False
    else:
        score = contrib["ann"] + contrib["cooc"] + contrib["fresh"] + contrib["trending"]
        blended = True
    # Cold start: a ranker's scores lean on content for a user's first events (config.py). The blend
    # needs no lean: its content term is already in the sum, and thin trending is discounted above.
    share = cold_start_share(state, cfg) if not blended else 0.0
    if share > 0 and u is not None and sim is not None and n:
        content = _content_term(sim)
        score = _lean_on_content(score, content, share)
        return _Pool(ids, creators, vecs, sim, norm, contrib, score, share, content)
    return _Pool(ids, creators, vecs, sim, norm, contrib, score)


def in_cold_start(state: UserState | None, cfg: RankingSettings) -> bool:
    """Whether the user is in their first ``cold_start_events`` positive events (new users too)."""
    return (len(state.history) if state is not None else 0) <= cfg.cold_start_events


def cold_start_share(state: UserState | None, cfg: RankingSettings) -> float:
    """How much of a cold user's relevance is content similarity (``cold_start_*`` in config.py):
    ``share * (k + 1 - n) / k`` for a user with n positive events, 1 <= n <= k; else 0."""
    k = cfg.cold_start_events
    n = len(state.history) if state is not None else 0
    if k <= 0 or not 1 <= n <= k:
        return 0.0
    return cfg.cold_start_content_share * (k + 1 - n) / k


def _content_term(sim: np.ndarray) -> np.ndarray:
    """The cosine to the taste vector min-max scaled over the pool, floored at 1e-3 (so the least
    similar candidate keeps its order under the ranker): the ``c`` of the cold-start lean."""
    s = np.nan_to_num(np.asarray(sim, dtype=np.float64), nan=-1.0)
    lo, hi = float(s.min()), float(s.max())
    c = (s - lo) / (hi - lo) if hi > lo else np.ones(len(s))
    return np.clip(c, 1e-3, None)


def _lean_on_content(score: np.ndarray, content: np.ndarray, share: float) -> np.ndarray:
    """``(score / max score) ** (1 - share) * c ** share`` (0 where the ranker scored 0).

    A weighted geometric mean, not a sum: an item must be both likely under the ranker and close
    to what the user liked to lead, so popular items of the user's topic come first. A sum let
    content nearest neighbours of no appeal push out what the user was about to choose (on the
    MicroLens benchmark: the same on-topic precision at -36% HR@20 for cold users, against -6%).
    """
    top = float(score.max())
    base = np.clip(score / top, 1e-12, None) if top > 0 else np.ones(len(score))
    return np.where(score > 0, base ** (1.0 - share) * content ** share, 0.0)


def _relative_likelihood(logits: np.ndarray) -> np.ndarray:
    """``exp(s_i - max s)``: a learned ranker's softmax probabilities relative to the best candidate's,
    in (0, 1] (0 for a candidate it did not score or a NaN), so MMR trades them off like blended scores."""
    s = np.where(np.isnan(logits), -np.inf, logits)
    if not len(s) or not np.isfinite(s).any():
        return np.zeros(len(s))
    return np.exp(s - s[np.isfinite(s)].max())


def _rrf(values: np.ndarray, has: np.ndarray, k0: float) -> np.ndarray:
    """``(k0 + 1) / (k0 + 1 + r)`` for the rows in ``has``, r their 0-based rank by ``values``
    (highest first; ties by row, i.e. by item id); 0 elsewhere."""
    out = np.zeros(len(values))
    rows = np.flatnonzero(has)
    if len(rows):
        order = rows[np.argsort(-values[rows], kind="stable")]
        out[order] = (k0 + 1.0) / (k0 + 1.0 + np.arange(len(order)))
    return out


def _mmr(pool: _Pool, k: int, cfg: RankingSettings) -> list[int]:
    n = len(pool.ids)
    if n == 0 or k <= 0:
        return []
    cap = cfg.creator_cap
    m = cfg.mmr_pool
    if m and max(m, k) < n:
        # Rerank only the best `mmr_pool` by blended score (stable sort: ties by id);
        # fall back to the whole pool when the creator cap starves it.
        top = np.argsort(-pool.score, kind="stable")[: max(m, k)]
        top.sort()  # keep id order so argmax ties still go to the smallest id
        creators = _creator_codes([pool.creators[r] for r in top.tolist()]) if cap > 0 else None
        # The capped pass picks at most min(cap, n_c) items of each creator c: skip it when that alone
        # leaves it short of k (a catalogue with one creator, a MovieLens replay: every list).
        if creators is None or int(creators.max()) + 1 >= k or _room_under_cap(creators, cap) >= k:
            picked = _mmr_over(pool, top, k, cfg, soft_cap=False, creators=creators)
            if len(picked) == k:
                return picked
    return _mmr_over(pool, np.arange(n), k, cfg, soft_cap=True)


def _creator_codes(creators: list[str | None]) -> np.ndarray:
    """Each row's creator as an integer from 0; a row without a creator is its own creator (never
    capped): a negative code of its own."""
    table = {c: i for i, c in enumerate(dict.fromkeys(creators))}
    codes = np.fromiter(map(table.__getitem__, creators), dtype=np.int64, count=len(creators))
    if None in table:
        rows = np.flatnonzero(codes == table[None])
        codes[rows] = -1 - rows
    return codes


def _room_under_cap(codes: np.ndarray, cap: int) -> int:
    """How many of these rows a creator cap of ``cap`` lets through: the sum over creators of min(cap, rows).
    At least ``codes.max() + 1``: the codes up to it stand for that many creators, a creator-less row
    counting as one (their table slot is unused, and there is at least one such row)."""
    own = codes < 0  # no creator: each its own, one row each
    return int(np.minimum(np.bincount(codes[~own]), cap).sum()) + int(own.sum())


def _mmr_over(pool: _Pool, idx: np.ndarray, k: int, cfg: RankingSettings, soft_cap: bool,
              creators: np.ndarray | None = None) -> list[int]:
    """Greedy MMR over pool rows ``idx``; returns pool row numbers in pick order. ``creators``: the
    rows' :func:`_creator_codes` when the caller has them.

    With ``soft_cap`` the creator cap yields when it alone would leave the list
    short: once every remaining item belongs to a capped creator, they become
    eligible again. A catalogue where one "creator" owns everything (MovieLens
    replays, single-studio catalogues) still gets full lists.
    """
    n = len(idx)
    whole = n == len(pool.ids)  # idx is every row, in order: no copy of the pool's vectors
    score = pool.score if whole else pool.score[idx]
    vecs = pool.vecs if whole else pool.vecs[idx]
    smax = float(score.max())
    rel = score / smax if smax > 0 else score.copy()
    lam = cfg.mmr_lambda
    base = lam * rel
    max_sim = np.zeros(n)  # max(0, max cos to picked); starting at 0 is the clip
    cap = cfg.creator_cap
    counts: dict[int, int] = {}
    if cap <= 0:
        creators = None
    elif creators is None:
        creators = _creator_codes(pool.creators if whole else [pool.creators[r] for r in idx.tolist()])
    # Picked and capped items get -inf in `base`, so one argmax per step does it all.
    mmr_scale = 1.0 - lam
    picked: list[int] = []
    buf = np.empty(n)
    capped = np.zeros(n, dtype=bool)  # eligible items held back only by the creator cap
    while len(picked) < k:
        if mmr_scale > 0:
            mmr = np.multiply(max_sim, -mmr_scale, out=buf)
            mmr += base
        else:
            mmr = base
        j = int(np.argmax(mmr))
        if base[j] == -np.inf:
            if not (soft_cap and capped.any()):
                break
            base[capped] = lam * rel[capped]  # lift the cap rather than return a short list
            capped[:] = False
            creators = None
            continue
        picked.append(j)
        base[j] = -np.inf
        if creators is not None:
            c = int(creators[j])
            counts[c] = counts.get(c, 0) + 1
            if counts[c] >= cap:
                hit = (creators == c) & (base != -np.inf)
                capped |= hit
                base[hit] = -np.inf
        if mmr_scale > 0 and vecs.shape[1]:
            np.maximum(max_sim, vecs @ vecs[j], out=max_sim)
    return [int(idx[j]) for j in picked]


def _short(title: str | None, fallback: str) -> str:
    t = " ".join((title or "").split()) or fallback
    return t if len(t) <= TITLE_MAX else t[: TITLE_MAX - 1].rstrip() + "…"


class _Explainer:
    """Builds reason strings; history vectors are stacked once per call."""

    def __init__(self, state: UserState | None, items: Mapping[str, ItemInfo], candidates: Candidates) -> None:
        self.items = items
        self.via = candidates.cooc_via
        hist = [h for h in reversed(state.history)] if state is not None else []  # newest first
        hist = [h for h in hist if h.item_id in items and items[h.item_id].vector is not None]
        self.hist = hist
        self.hvecs = _gather([items[h.item_id] for h in hist], items, "history item") if hist else None

    def closest_history(self, vecs: np.ndarray) -> list[Any]:
        """For each row of ``vecs``, the history entry with the most similar item (None if unknown)."""
        if self.hvecs is None or self.hvecs.shape[1] != vecs.shape[1]:
            return [None] * len(vecs)
        best = np.argmax(vecs @ self.hvecs.T, axis=1)  # argmax: the newest wins ties
        return [self.hist[b] if v.any() else None for b, v in zip(best.tolist(), vecs)]

    def reason(self, source: str, iid: str, closest: Any) -> str:
        h = closest
        if source == "ann":
            if h is None:
                return "matches your recent taste"
            title = _short(self.items[h.item_id].title, h.item_id)
            return f'similar to "{title}" {_VERBS.get(h.event_type, "you watched")}'
        if source == "cooc":
            via = self.via.get(iid)
            if via is not None and via in self.items:
                return f'viewers of "{_short(self.items[via].title, via)}" also watched this'
            if h is not None:
                return f'viewers of "{_short(self.items[h.item_id].title, h.item_id)}" also watched this'
            return "popular with viewers who watch what you watch"
        if source == "fresh":
            creator = self.items[iid].creator_id
            return f"new from {creator}" if creator else "new upload"
        return "trending now"


def _reasons(pool: _Pool, rows: list[int], explainer: _Explainer, closest: list[Any],
             cfg: RankingSettings) -> list[list[str]]:
    """For each pool row in ``rows``, at most two reasons: the source contributing most to the score,
    plus the runner-up when its own signal is strong (normalised ≥ 0.5), e.g. a brand-new upload
    that is also close to the user's taste."""
    # Signal above neutral: for ANN it is max(0, cos), since cos 0 maps to a norm
    # of 0.5 that every candidate gets and that explains nothing.
    sig = {s: pool.norm[s][rows].tolist() for s in SOURCES}
    sim = pool.sim[rows].tolist() if pool.sim is not None else [np.nan] * len(rows)
    sig["ann"] = [0.0 if x != x else max(0.0, x) for x in sim]
    w = cfg.source_weights
    weight = {s: getattr(w, s) for s in SOURCES}
    out = []
    for r, j in enumerate(rows):
        ev = {s: weight[s] * sig[s][r] for s in SOURCES}
        ranked = sorted((s for s in SOURCES if ev[s] > 0), key=lambda s: -ev[s])  # stable: SOURCES order on ties
        if not ranked:
            out.append(["recommended for you"])
            continue
        chosen = ranked[:1] + [s for s in ranked[1:2] if sig[s][r] >= 0.5]
        iid = pool.ids[j]
        out.append([explainer.reason(s, iid, closest[r]) for s in chosen])
    return out


def recommend(
    state: UserState | None,
    candidates: Candidates,
    items: Mapping[str, ItemInfo],
    now: float,
    cfg: RankingSettings,
    taken_down: Container[str] = (),
    k: int | None = None,
    learned: Mapping[str, float] | None = None,
) -> list[RecommendedItem]:
    """The user's top-``k`` list (default ``cfg.top_k``), best first, each with ≥1 reason.

    ``items`` must hold every candidate (missing ones are dropped) and, for
    reasons naming them, the user's history items. Fewer than ``k`` come back
    only when filtering leaves fewer eligible items; the creator cap yields rather
    than shorten the list. With ``cfg.fusion == "learned"``, ``learned`` holds a
    learned ranker's score of each candidate (:func:`streams.ranking.learned.learned_scores`)
    and replaces the blend; without it (no ranker fitted yet) the weighted blend ranks.
    """
    k = cfg.top_k if k is None else int(k)
    pool = _score_pool(state, candidates, items, now, cfg, taken_down, learned)
    picked = _mmr(pool, k, cfg)
    if not picked:
        return []
    explore = _explore(pool, picked, k, cfg, set(candidates.explore)) if in_cold_start(state, cfg) else {}
    picked = [j for j in picked if j not in explore][: k - len(explore)] + sorted(explore, key=explore.get)
    explainer = _Explainer(state, items, candidates)
    closest = explainer.closest_history(pool.vecs[picked])
    # The picked rows' numbers as Python floats in one conversion per array, not one per item.
    scores = pool.score[picked].tolist()
    contrib = [dict(zip(SOURCES, row)) for row in zip(*(pool.contrib[s][picked].tolist() for s in SOURCES))]
    content = pool.content[picked].tolist() if pool.content is not None else None
    reasons = _reasons(pool, picked, explainer, closest, cfg)
    return [
        RecommendedItem(
            item_id=pool.ids[j],
            score=scores[r],
            reasons=[EXPLORE_REASON] if j in explore else reasons[r],
            sources=contrib[r],
            content_lean=(pool.lean, content[r]) if content is not None else None,
        )
        for r, j in enumerate(picked)
    ]


def _explore(pool: _Pool, picked: list[int], k: int, cfg: RankingSettings, unexplored: set[str]) -> dict[int, int]:
    """Rows of unexplored fresh uploads (``Candidates.explore``) to put in the list's last slots
    (``explore_slots``), in order: the ones closest to the user's taste first (newest first without
    a taste vector); none when the list already holds enough of them. Returns ``{row: position}``."""
    slots = min(cfg.explore_slots, k)
    if slots <= 0 or not unexplored:
        return {}
    fresh = np.array([i in unexplored for i in pool.ids], dtype=bool)
    have = sum(1 for j in picked if fresh[j])
    need = slots - have
    if need <= 0:
        return {}
    chosen = set(picked)
    rows = [j for j in np.flatnonzero(fresh).tolist() if j not in chosen]
    if not rows:
        return {}
    sim = pool.sim
    key = (lambda j: (-_nan_last(float(sim[j])), -pool.norm["fresh"][j], pool.ids[j])) if sim is not None \
        else (lambda j: (-pool.norm["fresh"][j], pool.ids[j]))
    return {j: r for r, j in enumerate(sorted(rows, key=key)[:need])}


def explain_sources(
    state: UserState | None,
    candidates: Candidates,
    items: Mapping[str, ItemInfo],
    now: float,
    cfg: RankingSettings,
    taken_down: Container[str] = (),
) -> dict[str, dict[str, float]]:
    """Per-source contributions (``weight_s * norm_s``) and ``total`` for every candidate surviving filtering."""
    pool = _score_pool(state, candidates, items, now, cfg, taken_down)
    out = {}
    for j, iid in enumerate(pool.ids):
        d = {s: float(pool.contrib[s][j]) for s in SOURCES}
        d["total"] = float(pool.score[j])
        out[iid] = d
    return out
