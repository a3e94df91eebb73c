"""Where one list's ranking time goes, part by part, for a chunk of warm users (no I/O).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ranking_parts.py [--users 64] [--items 20000] [--creators 500]

A catalogue of unit vectors held the way the worker's item cache holds them (one matrix,
``ItemRows``), co-occurrence and trending built from Zipf-skewed histories, and a chunk of users
with 20-200 distinct items each, ranked the worker's way: ``gather_candidates`` (co-occurrence), then
``recommend`` with the blend, and ``learned_scores`` with a random-weight ranker (its cost does not
depend on the weights). Each part is timed on its own over the whole chunk, in ms per list. The
parts are private functions of ``streams/ranking/recommend.py``: this measures them, it does not
change them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.ranking import (RankingSettings, UserState, ingest_interaction, new_cooccurrence,  # noqa: E402
                             new_trending, user_vector)
from streams.ranking.candidates import gather_candidates, unexplored  # noqa: E402
from streams.ranking.learned import FEATURES, FeatureContext, LinearRanker, learned_scores  # noqa: E402
from streams.ranking.recommend import ItemInfo, ItemRows  # noqa: E402

rec = importlib.import_module("streams.ranking.recommend")  # the module, not the function of that name


def build(args) -> tuple:
    cfg = RankingSettings()
    rng = np.random.default_rng(0)
    now, n = 1.7e9, args.items
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = ItemRows((f"i{k}", ItemInfo(f"i{k}", f"c{k % args.creators}", f"title {k}", vecs[k],
                                        now - rng.uniform(0, 5 * 86400), row=k)) for k in range(n))
    items.matrix = vecs
    cooc, trending = new_cooccurrence(cfg), new_trending(cfg)

    def user(events: int) -> UserState:
        """A user with ``events`` distinct items, drawn by Zipf popularity (the realistic bench's mix)."""
        state, j = UserState(), 0
        while len(state.seen) < events:
            iid = f"i{int(rng.zipf(1.3)) % n}"
            if iid not in state.seen:
                ingest_interaction(state, f"e{events}-{j}-{rng.integers(1e9)}", iid, items[iid].vector, "like",
                                   None, now + j, cfg, cooc, trending)
                j += 1
        return state

    for _ in range(400):  # the rest of the platform: co-occurrence rows and popularity
        user(100)
    users = [user(int(h)) for h in rng.integers(20, 200, size=args.users)]
    fresh = [(f"i{k}", now - 100) for k in rng.choice(n, 50, replace=False)]
    top = trending.top(50, now)
    explore = unexplored(fresh, cooc, cfg)
    anns = []
    for state in users:  # the ANN hits: the exact top 200 by cosine
        sims = vecs @ user_vector(state)
        best = np.argpartition(-sims, 200)[:200]
        anns.append([(f"i{t}", float(sims[t])) for t in best])
    return cfg, now, items, cooc, trending, users, anns, fresh, top, explore


def timed(label: str, fn, lists: int, reps: int) -> None:
    """The best and the median of ``reps`` timings of ``fn`` (a whole chunk), in ms per list: the best
    is what the code costs, the median what a busy machine made of it."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / lists * 1e3)
    print(f"{label:<58} best {min(times):.3f}  median {float(np.median(times)):.3f} ms/list")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=64, help="users in the chunk (the worker's search_chunk)")
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--creators", type=int, default=500,
                   help="distinct creators in the catalogue (1: one studio, as in a MovieLens replay)")
    args = p.parse_args()
    cfg, now, items, cooc, trending, users, anns, fresh, top, explore = build(args)
    cands = [gather_candidates(s, cooc, cfg, a, fresh, top, explore) for s, a in zip(users, anns)]
    pools = [rec._score_pool(s, c, items, now, cfg, ()) for s, c in zip(users, cands)]
    picks = [rec._mmr(pool, cfg.top_k, cfg) for pool in pools]
    explainers = [rec._Explainer(s, items, c) for s, c in zip(users, cands)]
    closest = [e.closest_history(pool.vecs[k]) for e, pool, k in zip(explainers, pools, picks)]
    ranker = LinearRanker(np.random.default_rng(1).normal(size=len(FEATURES)), np.zeros(len(FEATURES)),
                          np.ones(len(FEATURES)))
    m, r = len(users), args.reps
    seen, hist = np.mean([len(s.seen) for s in users]), np.mean([len(s.history) for s in users])
    print(f"{m} users, on average {seen:.0f} items seen and {hist:.0f} in the history, "
          f"{np.mean([len(pool.ids) for pool in pools]):.0f} candidates a list; {len(items)} items")
    timed("gather_candidates (co-occurrence scoring)",
          lambda: [gather_candidates(s, cooc, cfg, a, fresh, top, explore) for s, a in zip(users, anns)], m, r)
    timed("recommend (blend)", lambda: [rec.recommend(s, c, items, now, cfg) for s, c in zip(users, cands)], m, r)
    timed("  pool scoring (_score_pool)", lambda: [rec._score_pool(s, c, items, now, cfg, ())
                                                   for s, c in zip(users, cands)], m, r)
    timed("  MMR (_mmr)", lambda: [rec._mmr(pool, cfg.top_k, cfg) for pool in pools], m, r)
    timed("  explainer (history vectors)", lambda: [rec._Explainer(s, items, c) for s, c in zip(users, cands)], m, r)
    timed("  closest history item of the picks",
          lambda: [e.closest_history(pool.vecs[k]) for e, pool, k in zip(explainers, pools, picks)], m, r)
    timed("  reasons", lambda: [rec._reasons(pool, k, e, c, cfg)
                                for e, pool, k, c in zip(explainers, pools, picks, closest)], m, r)
    timed("  exploration slots", lambda: [rec._explore(pool, k, cfg.top_k, cfg, set(c.explore))
                                          for pool, k, c in zip(pools, picks, cands)], m, r)
    timed("learned_scores (features + the ranker, no item regression)",
          lambda: [learned_scores(ranker, FeatureContext(s, cooc, trending, items, now), c)
                   for s, c in zip(users, cands)], m, r)
    learned_cfg = cfg.model_copy(update={"fusion": "learned"})
    scores = [learned_scores(ranker, FeatureContext(s, cooc, trending, items, now), c) for s, c in zip(users, cands)]
    timed("recommend (learned fusion, given those scores)",
          lambda: [rec.recommend(s, c, items, now, learned_cfg, learned=sc)
                   for s, c, sc in zip(users, cands, scores)], m, r)


if __name__ == "__main__":
    main()
