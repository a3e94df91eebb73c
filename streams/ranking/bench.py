"""Micro-benchmark of the scoring core on synthetic data: ``python -m streams.ranking.bench``.

Not imported by the package. Prints p10/p50/p90 per call for recommend() with
~300 candidates at D=384 (warm user) and 100 (cold start), and for the
per-event path, and co-occurrence scoring, the vectorised path next to the plain
loop it replaced (``--cooc-only`` runs just that part). Pin
``OPENBLAS_NUM_THREADS=1`` for steadier numbers: the matrices are too small for
BLAS threads to pay off.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Callable

import numpy as np

from streams.ranking import (
    Candidates,
    ItemInfo,
    RankingSettings,
    UserState,
    history_ids,
    ingest_interaction,
    new_cooccurrence,
    new_trending,
    recommend,
    user_vector,
)
from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.item_regression import ItemRegression
from streams.ranking.learned import (
    FEATURES,
    FeatureContext,
    LinearRanker,
    cooc_views,
    learned_scores,
)

log = logging.getLogger(__name__)


def _dist(f: Callable[[], object], n: int) -> str:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return f"p10 {ts[n // 10] * 1e3:.3f}  p50 {ts[n // 2] * 1e3:.3f}  p90 {ts[9 * n // 10] * 1e3:.3f} ms"


def _synthetic_cooc(rng: np.random.Generator, catalogue: int, rows: int, max_neighbors: int) -> CoOccurrence:
    """``rows`` full rows (``max_neighbors`` to 1.25x that, as pruning leaves them) over a catalogue of
    ``catalogue`` ids with Zipf-like popularity, small integer counts (as real pair counts are)."""
    co = CoOccurrence(max_neighbors=max_neighbors)
    pop = 1 / np.arange(1, catalogue + 1) ** 0.8
    pop /= pop.sum()
    for i in range(rows):
        size = int(rng.integers(max_neighbors, max_neighbors + max_neighbors // 4 + 1))
        nb = rng.choice(catalogue, size, replace=False, p=pop)
        co.counts[f"i{i}"] = {f"i{j}": float(c) for j, c in zip(nb, rng.geometric(0.5, size)) if j != i}
    for i, p in enumerate(rng.integers(1, 2000, catalogue)):
        co.pops[f"i{i}"] = float(p)
    return co


def cooc_bench(calls: int, catalogue: int = 50_000) -> None:
    """Co-occurrence scoring, 100 candidates, a user with 2 and with 20 history items: the plain loop
    (the code before the arrays) and the array path, alternating so machine noise hits both alike.
    Run from the repository root: the plain loop is the tests' oracle (``tests/cooc_reference.py``)."""
    from tests.cooc_reference import cooc_views_reference, score_candidates_reference

    rng = np.random.default_rng(1)
    for max_nb in (100, 300):  # ~100-125 neighbours a row, and the default cooc_max_neighbors
        co = _synthetic_cooc(rng, catalogue, 5000, max_nb)
        for n_hist in (2, 20):
            hist = [f"i{j}" for j in rng.choice(5000, n_hist, replace=False)]
            assert co.score_candidates_explained(hist, 100) == score_candidates_reference(co, hist, 100)

            def missing() -> object:  # every row changed since it was cached: each call rebuilds them
                co._row_arrays.clear()
                return co.score_candidates_explained(hist, 100)

            label = f"cooc.score_candidates_explained, {n_hist} history rows of {max_nb}-{max_nb * 5 // 4}, " \
                    f"{catalogue} ids"
            for _ in range(2):
                log.info("%s, loop (before):        %s", label,
                         _dist(lambda: score_candidates_reference(co, hist, 100), calls))
                log.info("%s, arrays (after):       %s", label,
                         _dist(lambda: co.score_candidates_explained(hist, 100), calls))
                log.info("%s, arrays, rows rebuilt: %s", label, _dist(missing, calls))
        # The learned ranker's co-occurrence features: 50 liked and 60 watched items, 300 candidates.
        liked = [f"i{j}" for j in rng.choice(5000, 50, replace=False)]
        watched = liked + [f"i{j}" for j in rng.choice(5000, 10, replace=False)]
        pool = [f"i{j}" for j in rng.choice(catalogue, 300, replace=False)]
        assert (cooc_views(co, (liked, watched), pool) == cooc_views_reference(co, (liked, watched), pool)).all()
        label = f"learned.cooc_views, 50 liked + 60 watched, rows of {max_nb}-{max_nb * 5 // 4}, 300 candidates"
        for _ in range(2):
            log.info("%s, row scan (before): %s", label,
                     _dist(lambda: cooc_views_reference(co, (liked, watched), pool), calls))
            log.info("%s, arrays (after):    %s", label, _dist(lambda: cooc_views(co, (liked, watched), pool), calls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--cooc-only", action="store_true", help="only the co-occurrence scoring benchmark")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cooc_bench(min(args.calls, 1000))
    if args.cooc_only:
        return

    cfg = RankingSettings()
    rng = np.random.default_rng(0)
    now = 1.7e9
    vecs = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = {
        f"i{n}": ItemInfo(f"i{n}", f"c{n % 60}", f"title {n}", vecs[n], now - rng.uniform(0, 5 * 86400))
        for n in range(args.items)
    }
    co, tr = new_cooccurrence(cfg), new_trending(cfg)
    pop = 1 / np.arange(1, args.items + 1) ** 0.8
    pop /= pop.sum()
    t = time.perf_counter()
    n_ev = 0
    state = UserState()
    profiles = []
    for u in range(2000):
        state = UserState()
        for j, it in enumerate(rng.choice(args.items, 30, p=pop)):
            iid = f"i{it}"
            ingest_interaction(state, f"u{u}-{j}", iid, items[iid].vector, "like", None, now + j, cfg, co, tr)
            n_ev += 1
        profiles.append(list(state.seen))
    print(f"ingest_interaction (user state + co-occurrence + trending): {(time.perf_counter() - t) / n_ev * 1e6:.1f} us/event")

    u_vec = user_vector(state)
    seen = set(state.seen)
    ids = [i for i in items if i not in seen]
    perm = rng.permutation(len(ids))
    pick = [ids[p] for p in perm[:300]]
    cand = Candidates(
        ann=[(i, float(items[i].vector @ u_vec)) for i in pick[:200]],
        cooc=[(i, float(rng.uniform())) for i in pick[150:250]],
        fresh=[(i, items[i].created_at) for i in pick[250:300]],
        trending=[(i, float(rng.pareto(1.5))) for i in pick[200:250]],
    )
    print("recommend, warm user, 300 candidates:", _dist(lambda: recommend(state, cand, items, now, cfg), args.calls))
    cold = Candidates(fresh=cand.fresh, trending=cand.trending)
    print("recommend, cold start, 100 candidates:", _dist(lambda: recommend(None, cold, items, now, cfg), args.calls))
    hist = history_ids(state)
    print("cooc.score_candidates_explained:", _dist(lambda: co.score_candidates_explained(hist, 100), 300))
    print(f"trending.top(50) over {len(tr)} items:", _dist(lambda: tr.top(50, now), 300))
    # fusion "learned": the features of every candidate and one dot product each (random weights:
    # the cost does not depend on their values).
    w = rng.normal(size=len(FEATURES))
    bare = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    ctx = FeatureContext(state, co, tr, items, now)
    t = time.perf_counter()
    item_model = ItemRegression.fit(profiles, l2=cfg.item_regression_l2, top_k=cfg.item_regression_top_k)
    print(f"item regression fit, {len(profiles)} users x {len(item_model)} items: {time.perf_counter() - t:.2f} s")
    ranker = LinearRanker(w, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), item_model=item_model)
    # A long-watching user: the item regression reads up to its 200 most recent watched items.
    long_state = UserState.from_dict(state.to_dict())
    long_state.seen.update(dict.fromkeys(f"i{j}" for j in rng.choice(args.items, 200, replace=False)))
    long_ctx = FeatureContext(long_state, co, tr, items, now)
    pool = list(dict.fromkeys(i for src in (cand.ann, cand.cooc, cand.fresh, cand.trending) for i, _ in src))
    print(f"item_regression.views, 230 watched, {len(pool)} candidates:",
          _dist(lambda: item_model.views(long_state.seen, pool), 300))
    # Side by side, alternating, so machine noise hits both alike.
    for _ in range(2):
        for label, c in (("warm user (30 watched)", ctx), ("long history (230 watched)", long_ctx)):
            print(f"learned_scores, {label}, 300 candidates, no item regression:",
                  _dist(lambda: learned_scores(bare, c, cand), 300))
            print(f"learned_scores, {label}, 300 candidates, with the item regression:",
                  _dist(lambda: learned_scores(ranker, c, cand), 300))


if __name__ == "__main__":
    main()
