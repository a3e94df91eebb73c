"""AnnCache: a cache hit is the exact top N a fresh search would return, never an approximation.

The reference "Milvus" is an exact NumPy cosine search over clustered random unit
vectors; users' taste vectors move like the worker's (a decayed weighted sum of the
items they interact with, mostly in their own topics, sometimes far off).

``python -m tests.unit.test_ann_cache`` logs the hit rate for a grid of ``extra`` and
``max_angle_deg`` (how the defaults in WorkerSettings were chosen).
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest

from streams.ranking.ann_cache import AnnCache

log = logging.getLogger(__name__)

N = 200


class Catalogue:
    """Clustered unit vectors (cosine ~0.5 within a cluster) and an exact top-k search."""

    def __init__(self, n_items: int = 5000, dim: int = 64, clusters: int = 50, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((clusters, dim))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        self.cluster = rng.integers(0, clusters, n_items)
        x = centers[self.cluster] + rng.standard_normal((n_items, dim)) / math.sqrt(dim)
        self.x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        self.ids = [f"item-{i:05d}" for i in range(n_items)]
        self.row = {iid: i for i, iid in enumerate(self.ids)}
        self.by_cluster = [np.flatnonzero(self.cluster == c) for c in range(clusters)]
        self.cached = set(self.ids)  # what the "item cache" holds: vectors_of answers None outside it
        self.searches = 0

    def search(self, q: np.ndarray, limit: int) -> list[tuple[str, float]]:
        self.searches += 1
        q = (q / np.linalg.norm(q)).astype(np.float32)
        sims = self.x @ q
        best = np.argsort(-sims, kind="stable")[:limit]
        return [(self.ids[j], float(sims[j])) for j in best]

    def vectors_of(self, ids) -> np.ndarray | None:
        if any(i not in self.cached for i in ids):
            return None
        return self.x[[self.row[i] for i in ids]]


def histories(cat: Catalogue, users: int, events: int, seed: int = 1):
    """Per user, the taste vector after each event: a decayed sum of liked (and a few disliked) items,
    mostly from two home clusters, now and then from anywhere (a large turn)."""
    rng = np.random.default_rng(seed)
    n_clusters = len(cat.by_cluster)
    for u in range(users):
        home = rng.choice(n_clusters, 2, replace=False)
        s = np.zeros(cat.x.shape[1], dtype=np.float32)
        path = []
        for _ in range(events):
            c = home[rng.integers(0, 2)] if rng.random() < 0.85 else rng.integers(0, n_clusters)
            item = rng.choice(cat.by_cluster[c])
            w = rng.choice([1.0, 0.5, 0.3, -0.3], p=[0.4, 0.3, 0.2, 0.1])  # like, view, short view, skip
            s = np.float32(0.5 ** (1 / 50)) * s + np.float32(w) * cat.x[item]
            path.append(s.copy())
        yield f"user-{u}", path


def replay(cat: Catalogue, cache: AnnCache, users: int, events: int, check: bool = True) -> tuple[int, int]:
    """Every event: look up; on a hit compare with a fresh exact search, on a miss search and store.
    Returns (hits, misses) over events after the first of each user."""
    hits = misses = 0
    for user, path in histories(cat, users, events):
        for step, vec in enumerate(path):
            if np.linalg.norm(vec) < 1e-6:
                continue
            found = cache.lookup(user, vec, N, cat.vectors_of)
            if found is None:
                misses += step > 0
                row = cat.search(vec, cache.limit(N))
                found = cache.store(user, vec, N, row)
                if check:
                    assert found == row[:N]
            else:
                hits += 1
            if check:
                assert_same_top_n(found, cat.search(vec, N), f"{user} step {step}")
    return hits, misses


def assert_same_top_n(found: list[tuple[str, float]], fresh: list[tuple[str, float]], where: str) -> None:
    """The same items, best first, the same scores (to 1e-5): only items within float32 rounding of
    each other may trade places (two float32 dot products of one pair differ in the last bits)."""
    assert {i for i, _ in found} == {i for i, _ in fresh}, f"{where}: not the exact top N"
    assert np.allclose([s for _, s in found], [s for _, s in fresh], atol=1e-5, rtol=0), where
    score = dict(fresh)
    for (a, _), (b, _) in zip(found, fresh):
        assert a == b or abs(score[a] - score[b]) <= 1e-5, f"{where}: {a} listed where {b} belongs"
    assert all(type(s) is float for _, s in found)


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return Catalogue()


def test_every_hit_is_the_exact_fresh_top_n_and_both_outcomes_occur(cat):
    cache = AnnCache(max_users=1000, extra=100, max_angle_deg=20)
    hits, misses = replay(cat, cache, users=12, events=120)
    assert hits > 0 and misses > 0, (hits, misses)  # a check that never hits (or never misses) proves nothing
    assert cache.hits == hits


def test_a_tight_gap_is_a_miss_not_an_approximation(cat):
    """extra = 0: the stored floor is the N-th score itself, so t > floor + d + eps fails even unturned;
    with room below the N-th (extra 100) the same vector hits and a turn past the gap misses."""
    rng = np.random.default_rng(3)
    u0 = cat.x[0] + cat.x[1]
    tight = AnnCache(max_users=10, extra=0, max_angle_deg=30)
    tight.store("u", u0, N, cat.search(u0, tight.limit(N)))
    assert tight.lookup("u", u0, N, cat.vectors_of) is None
    roomy = AnnCache(max_users=10, extra=100, max_angle_deg=30)
    row = cat.search(u0, roomy.limit(N))
    roomy.store("u", u0, N, row)
    assert roomy.lookup("u", u0, N, cat.vectors_of) is not None
    gap = row[N - 1][1] - row[-1][1]
    noise = rng.standard_normal(u0.shape)
    u1 = (u0 / np.linalg.norm(u0) + 2 * gap * noise / np.linalg.norm(noise)).astype(np.float32)
    assert roomy.lookup("u", u1, N, cat.vectors_of) is None  # d ~ 2 x gap: the proof cannot hold


def test_a_large_turn_is_a_miss_without_touching_the_vectors(cat):
    cache = AnnCache(max_users=10, extra=100, max_angle_deg=5)
    u0 = cat.x[cat.by_cluster[0][0]]
    cache.store("u", u0, N, cat.search(u0, cache.limit(N)))
    calls = []
    far = cat.x[cat.by_cluster[1][0]]
    assert cache.lookup("u", far, N, lambda ids: calls.append(ids)) is None
    assert calls == []


def test_an_item_not_in_the_item_cache_is_a_miss(cat):
    cache = AnnCache(max_users=10, extra=100, max_angle_deg=20)
    u0 = cat.x[5]  # its N-th and (N+1)-th are not within rounding of each other (that would miss too)
    row = cat.search(u0, cache.limit(N))
    cache.store("u", u0, N, row)
    assert cache.lookup("u", u0, N, cat.vectors_of) is not None
    cat.cached.discard(row[-1][0])  # one of the extra hits was evicted (or taken down)
    try:
        assert cache.lookup("u", u0, N, cat.vectors_of) is None
    finally:
        cat.cached.add(row[-1][0])


def test_a_different_n_is_a_miss(cat):
    cache = AnnCache(max_users=10, extra=100, max_angle_deg=20)
    u0 = cat.x[5]
    cache.store("u", u0, N, cat.search(u0, cache.limit(N)))
    assert cache.lookup("u", u0, N - 1, cat.vectors_of) is None
    assert cache.lookup("u", u0, N, cat.vectors_of) is not None


def test_the_whole_catalogue_fewer_than_m_hits_is_exact_at_any_turn_within_the_angle():
    small = Catalogue(n_items=250, dim=16, clusters=5, seed=7)
    cache = AnnCache(max_users=10, extra=100, max_angle_deg=60)
    u0 = small.x[0]
    row = small.search(u0, cache.limit(N))
    assert len(row) == 250 < cache.limit(N)
    assert cache.store("u", u0, N, row) == row[:N]
    u1 = small.x[0] + 0.5 * small.x[1]  # a turn no finite floor would survive
    found = cache.lookup("u", u1, N, small.vectors_of)
    assert found is not None
    assert_same_top_n(found, small.search(u1, N), "whole catalogue")
    # An empty catalogue stays empty (until the user's next miss, like new uploads: by design).
    cache.store("v", u0, N, [])
    assert cache.lookup("v", u1, N, small.vectors_of) == []


def test_the_lru_keeps_the_most_recently_used_users(cat):
    cache = AnnCache(max_users=3, extra=10, max_angle_deg=20)
    for u in ("a", "b", "c"):
        cache.store(u, cat.x[0], N, cat.search(cat.x[0], cache.limit(N)))
    assert cache.lookup("a", cat.x[0], N, cat.vectors_of) is not None  # "a" is now the most recent
    cache.store("d", cat.x[0], N, cat.search(cat.x[0], cache.limit(N)))
    assert len(cache) == 3
    assert "b" not in cache and {"a", "c", "d"} <= {u for u in ("a", "c", "d") if u in cache}


def test_disabled_stores_nothing_and_asks_for_n_only(cat):
    cache = AnnCache(max_users=0, extra=100, max_angle_deg=20)
    assert cache.limit(N) == N
    row = cat.search(cat.x[0], N)
    assert cache.store("u", cat.x[0], N, row) == row
    assert len(cache) == 0 and cache.lookup("u", cat.x[0], N, cat.vectors_of) is None


def test_ties_go_by_id():
    """Two items with the same vector: a hit lists them by id, whatever order they were stored in."""
    cache = AnnCache(max_users=10, extra=1, max_angle_deg=20)
    vecs = {"b": np.array([1, 0], np.float32), "a": np.array([1, 0], np.float32),
            "c": np.array([0, 1], np.float32)}
    cache.store("u", np.array([1, 0.01], np.float32), 2, [("b", 1.0), ("a", 1.0), ("c", 0.0)])
    found = cache.lookup("u", np.array([1, 0.01], np.float32), 2, lambda ids: np.stack([vecs[i] for i in ids]))
    assert [i for i, _ in found] == ["a", "b"]


def test_bad_settings_say_what_is_expected():
    with pytest.raises(ValueError, match="max_angle_deg"):
        AnnCache(max_users=10, extra=10, max_angle_deg=200)


def measure(users: int = 40, events: int = 200) -> None:
    """Hit rate over users whose histories grow 1 -> ``events`` items, by history length, and the
    lookups that fetched vectors only to miss (the cost of a loose angle)."""
    cat = Catalogue()
    paths = list(histories(cat, users, events))
    buckets = ((1, 10), (10, 50), (50, events + 1))
    for extra, angle in itertools.product((50, 100, 200, 400), (5, 10, 20)):
        cache = AnnCache(max_users=10_000, extra=extra, max_angle_deg=angle)
        tally = {b: [0, 0] for b in buckets}
        fetched_for_nothing = 0
        for user, path in paths:
            for step, vec in enumerate(path):
                calls = []
                found = cache.lookup(user, vec, N, lambda ids: calls.append(1) or cat.vectors_of(ids))
                if found is None:
                    fetched_for_nothing += bool(calls)
                    cache.store(user, vec, N, cat.search(vec, cache.limit(N)))
                if step:
                    b = next(b for b in buckets if b[0] <= step < b[1])
                    tally[b][found is None] += 1
        rates = ", ".join(f"history {lo}-{hi - 1}: {h / max(1, h + m):.2f}" for (lo, hi), (h, m) in tally.items())
        hits = sum(h for h, _ in tally.values())
        total = sum(h + m for h, m in tally.values())
        log.info("extra %3d angle %2d: hit rate %.3f (%s); vectors fetched for a miss in %.1f%% of lookups",
                 extra, angle, hits / total, rates, 100 * fetched_for_nothing / total)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    measure()
