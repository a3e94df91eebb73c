"""This checkout's ranking against another revision's, side by side in one process (no I/O).

    git worktree add /tmp/base <rev>
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ranking_ab.py --base /tmp/base [--creators 500]

On a busy machine two runs minutes apart differ by more than a change is worth. Here both
versions rank the same chunk of warm users (``bench/ranking_parts.py``'s world) in alternation,
round after round, and each line gives the best, the first quartile and the median per list. The
other revision's ``recommend.py``, ``learned.py`` and ``trending.py`` are loaded as modules of
their own; everything else is this checkout's. Before timing, both must give the same lists and
the same learned scores (to the bit), or the run stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ranking_parts import build, rec  # noqa: E402
from streams.ranking import learned  # noqa: E402
from streams.ranking.candidates import gather_candidates  # noqa: E402


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="a checkout of the revision to compare against")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--creators", type=int, default=500,
                   help="distinct creators in the catalogue (1: one studio, as in a MovieLens replay)")
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    ranking = args.base / "streams" / "ranking"
    rec_b, learned_b = load(ranking / "recommend.py", "base_recommend"), load(ranking / "learned.py", "base_learned")
    trending_b = load(ranking / "trending.py", "base_trending")

    cfg, now, items, cooc, trending, users, anns, fresh, top, explore = build(args)
    cands = [gather_candidates(s, cooc, cfg, a, fresh, top, explore) for s, a in zip(users, anns)]
    items_b = rec_b.ItemRows(items)  # the base's own ItemRows class, on the same matrix
    items_b.matrix = items.matrix
    trend_b = trending_b.DecayedCounter.from_dict(trending.to_dict())
    f = learned.FEATURES
    ranker = learned.LinearRanker(np.random.default_rng(1).normal(size=len(f)), np.zeros(len(f)), np.ones(len(f)))
    lcfg = cfg.model_copy(update={"fusion": "learned"})

    def learned_of(mod, its, trend):
        return lambda: [mod.learned_scores(ranker, mod.FeatureContext(s, cooc, trend, its, now), c)
                        for s, c in zip(users, cands)]

    sides = {
        "base": (rec_b, items_b, learned_of(learned_b, items_b, trend_b)),
        "this": (rec, items, learned_of(learned, items, trending)),
    }
    scores = {side: fn() for side, (_, _, fn) in sides.items()}
    if [dict(x) for x in scores["base"]] != [dict(x) for x in scores["this"]]:
        raise SystemExit("the two revisions' learned scores differ: nothing to compare")
    lists = {side: [[r.item_id for r in mod.recommend(s, c, its, now, cfg)] for s, c in zip(users, cands)]
             for side, (mod, its, _) in sides.items()}
    if lists["base"] != lists["this"]:
        raise SystemExit("the two revisions' lists differ: nothing to compare")

    # MMR is timed on each side's own pools, built once here (the parts below read them).
    pools = {side: [mod._score_pool(s, c, its, now, cfg, ()) for s, c in zip(users, cands)]
             for side, (mod, its, _) in sides.items()}
    parts = {
        "recommend (blend)": lambda mod, its, side: [mod.recommend(s, c, its, now, cfg) for s, c in zip(users, cands)],
        "  MMR (_mmr)": lambda mod, its, side: [mod._mmr(pool, cfg.top_k, cfg) for pool in pools[side]],
        "learned_scores": lambda mod, its, side: sides[side][2](),
        "recommend (learned fusion)": lambda mod, its, side: [
            mod.recommend(s, c, its, now, lcfg, learned=x) for s, c, x in zip(users, cands, scores[side])],
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, fn in parts.items():
            for side, (mod, its, _) in sides.items():
                t = time.perf_counter()
                fn(mod, its, side)
                times.setdefault((label, side), []).append((time.perf_counter() - t) / len(users) * 1e3)
    print(f"{len(users)} users, {args.items} items, {args.creators} creators; {args.rounds} alternations; ms per list")
    for label in parts:
        for side in sides:
            v = times[(label, side)]
            print(f"{label:<28} {side:<5} best {min(v):.3f}  p25 {np.percentile(v, 25):.3f}  "
                  f"median {np.median(v):.3f}")


if __name__ == "__main__":
    main()
