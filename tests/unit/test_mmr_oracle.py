"""MMR's fast paths (creator codes made once per pool, the capped pass skipped when the cap alone
leaves it short, no copy of a whole pool's vectors) pick exactly what the plain algorithm picks.

The oracle below is the plain algorithm as it stood before those paths: a per-row creator loop,
the capped pass over the best ``mmr_pool`` always tried first, then the soft-capped pass over every row.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from streams.ranking import RankingSettings

rec = importlib.import_module("streams.ranking.recommend")  # the module, not the function of that name


def _oracle_over(pool, idx, k, cfg, soft_cap):
    n = len(idx)
    score, vecs = pool.score[idx], pool.vecs[idx]
    smax = float(score.max())
    rel = score / smax if smax > 0 else score.copy()
    lam = cfg.mmr_lambda
    base = lam * rel
    max_sim = np.zeros(n)
    cap, counts, creators = cfg.creator_cap, {}, None
    if cap > 0:
        codes: dict = {}
        creators = np.empty(n, dtype=np.int64)
        for j, row in enumerate(idx.tolist()):
            c = pool.creators[row]
            creators[j] = codes.setdefault(c, len(codes)) if c is not None else -1 - j
    picked: list[int] = []
    capped = np.zeros(n, dtype=bool)
    while len(picked) < k:
        mmr = base + max_sim * -(1.0 - lam) if lam < 1.0 else base
        j = int(np.argmax(mmr))
        if base[j] == -np.inf:
            if not (soft_cap and capped.any()):
                break
            base[capped] = lam * rel[capped]
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
        if lam < 1.0:
            np.maximum(max_sim, vecs @ vecs[j], out=max_sim)
    return [int(idx[j]) for j in picked]


def _oracle(pool, k, cfg):
    n = len(pool.ids)
    if n == 0 or k <= 0:
        return []
    m = cfg.mmr_pool
    if m and max(m, k) < n:
        top = np.argsort(-pool.score, kind="stable")[: max(m, k)]
        top.sort()
        picked = _oracle_over(pool, top, k, cfg, soft_cap=False)
        if len(picked) == k:
            return picked
    return _oracle_over(pool, np.arange(n), k, cfg, soft_cap=True)


def _pool(rng, n: int, n_creators: int, none_share: float):
    vecs = rng.normal(size=(n, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    names = [f"c{j}" for j in range(n_creators)]
    creators = [None if rng.random() < none_share else names[int(rng.integers(n_creators))] for _ in range(n)]
    score = np.round(rng.random(n), 2)  # rounded: ties, which must go to the smallest row
    return rec._Pool([f"i{j:04d}" for j in range(n)], creators, vecs, None, {}, {}, score)


@pytest.mark.parametrize("seed", range(6))
def test_mmr_picks_what_the_plain_algorithm_picks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(1, 160))
        pool = _pool(rng, n, n_creators=int(rng.integers(1, 7)), none_share=float(rng.choice([0.0, 0.2, 1.0])))
        cfg = RankingSettings(mmr_pool=int(rng.choice([0, 10, 40])), creator_cap=int(rng.choice([0, 1, 2, 3])),
                              mmr_lambda=float(rng.choice([0.5, 0.9, 1.0])))
        k = int(rng.choice([1, 5, 20]))
        want = _oracle(pool, k, cfg)
        assert rec._mmr(pool, k, cfg) == want, (n, k, cfg.mmr_pool, cfg.creator_cap, cfg.mmr_lambda)


def test_one_creator_skips_the_capped_pass_and_still_fills_the_list(monkeypatch):
    rng = np.random.default_rng(7)
    pool = _pool(rng, 120, n_creators=1, none_share=0.0)
    cfg = RankingSettings(mmr_pool=30, creator_cap=2)
    passes = []
    real = rec._mmr_over
    monkeypatch.setattr(rec, "_mmr_over", lambda p, idx, *a, **kw: passes.append(len(idx)) or real(p, idx, *a, **kw))
    got = rec._mmr(pool, 20, cfg)
    assert passes == [120]  # only the soft-capped pass over every row: the capped one could pick 2 of 20
    assert got == _oracle(pool, 20, cfg) and len(got) == 20
    # Enough creators in the best 30 for a full capped list: that pass runs, and is enough.
    pool = _pool(rng, 120, n_creators=40, none_share=0.1)
    passes.clear()
    assert rec._mmr(pool, 20, cfg) == _oracle(pool, 20, cfg)
    assert passes[0] == 30


def test_room_under_cap_counts_each_creator_up_to_the_cap():
    codes = rec._creator_codes(["a", "b", "a", None, "a", None, "c"])
    assert len(set(codes.tolist())) == 5  # a, b, c and each creator-less row on its own
    assert rec._room_under_cap(codes, 1) == 5
    assert rec._room_under_cap(codes, 2) == 6
    assert rec._room_under_cap(codes, 3) == 7
