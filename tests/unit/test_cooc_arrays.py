"""Vectorised co-occurrence scoring against the plain loop it replaced, and the row-array cache."""

from __future__ import annotations

import copy
import random
from collections import UserDict

import numpy as np
import pytest

from streams.ranking.cooc_rows import CodedPops, RowArrays
from streams.ranking.cooccurrence import CoOccurrence, _unique_codes
from streams.ranking.item_ops import ItemOp, apply_op
from streams.ranking.learned import COOC_VIEWS, cooc_views
from tests.cooc_reference import cooc_views_reference, score_candidates_reference

ARRAYS, LOOP = 0, 10**9  # array_min_entries forcing one path or the other


def _store(rng: random.Random, n_items: int = 60, row_len: int = 25, path: int = ARRAYS) -> CoOccurrence:
    """Random rows with small integer counts and few distinct pops: many exact ties in parts and scores,
    and inexact square roots (7, 11), so a change in the order or the form of the arithmetic shows."""
    co = CoOccurrence(max_neighbors=row_len)
    co.array_min_entries = path
    ids = [f"i{k}" for k in range(n_items)]
    for i in ids:
        if rng.random() < 0.1:
            continue  # no row
        if rng.random() < 0.05:
            co.counts[i] = {}  # an empty row
            continue
        nb = rng.sample([j for j in ids if j != i], rng.randint(1, row_len))
        co.counts[i] = {j: float(rng.randint(1, 3)) for j in nb}
    for i in ids:
        r = rng.random()
        if r < 0.1:
            continue  # no popularity: never scored, never scores
        co.pops[i] = 0.0 if r < 0.15 else float(rng.choice((1, 2, 3, 4, 7, 9, 11)))
    return co


def _both(co: CoOccurrence, *args, **kw) -> list[tuple[str, float, str]]:
    got = co.score_candidates_explained(*args, **kw)
    assert got == score_candidates_reference(co, *args, **kw)  # same ids, order, floats and attributions
    return got


@pytest.mark.parametrize("path, table_pops", [(ARRAYS, False), (ARRAYS, True), (LOOP, False)])
@pytest.mark.parametrize("half_life", [0.0, 2.5])
def test_random_stores_match_the_loop(path: int, table_pops: bool, half_life: float) -> None:
    """``table_pops``: popularity in a mapping that is not a dict (a table), read id by id, not by code."""
    rng = random.Random(17)
    nonempty = 0
    for _ in range(40):
        co = _store(rng, path=path)
        assert isinstance(co.pops, CodedPops)
        if table_pops:
            co.pops = UserDict(co.pops)
            assert not isinstance(co.pops, CodedPops)
        ids = [f"i{k}" for k in range(60)] + ["never-seen"]
        for _ in range(10):
            hist = [rng.choice(ids) for _ in range(rng.randint(1, 30))]  # repeats: distinct ones count
            exclude = rng.sample(ids, rng.randint(0, 15))
            n = rng.choice((1, 3, 10, 50, 1000))
            window = rng.choice((None, 0, 1, 4, 20))
            got = _both(co, hist, n, exclude=exclude, recency_half_life=half_life, score_window=window)
            nonempty += bool(got)
            assert len(got) <= n
            scored = co._recent_history(hist, window)  # the history items that score (and are skipped)
            assert not {j for j, _, _ in got} & (set(exclude) | set(scored))
            assert all(co.pops.get(j, 0.0) > 0 for j, _, _ in got)
    assert nonempty > 200  # the comparisons above compared something
    if path == ARRAYS:
        assert co._row_arrays.builds > 0  # ... on the array path


def test_attribution_ties_go_to_the_most_recent_item_and_score_ties_to_the_smaller_id() -> None:
    co = CoOccurrence()
    co.array_min_entries = ARRAYS
    co.counts = {"old": {"x": 2.0, "y": 2.0, "b": 1.0}, "new": {"x": 2.0, "y": 1.0, "a": 1.0}}
    co.pops = {"old": 4.0, "new": 4.0, "x": 1.0, "y": 1.0, "a": 1.0, "b": 1.0}
    got = _both(co, ["old", "new"], 10)
    assert got == [("x", 2.0, "new"), ("y", 1.5, "old"), ("a", 0.5, "new"), ("b", 0.5, "old")]


def test_rows_rewritten_between_calls_are_read_afresh() -> None:
    rng = random.Random(3)
    co = _store(rng, path=ARRAYS)
    hist = [i for i in co.counts if co.counts[i] and co.pops.get(i, 0) > 0][:6]
    before = _both(co, hist, 20)
    builds = co._row_arrays.builds
    _both(co, hist, 20)
    assert co._row_arrays.builds == builds  # unchanged rows come from the cache
    # The live path (apply_op), a merge and a plain replacement: each writes a new row object.
    target = before[-1][0]
    apply_op(ItemOp(hist[0], pairs=((target, 50.0),)), co, None)
    co.merge_row(hist[1], {"i59": 7.0, target: 3.0})
    co.counts[hist[2]] = {j: c + 1.0 for j, c in co.counts[hist[2]].items()}
    after = _both(co, hist, 20)
    assert after != before and after[0][0] == target  # a stale cache would have kept `before`
    assert co._row_arrays.builds == builds + 3


def test_removed_items_leave_every_row() -> None:
    rng = random.Random(5)
    co = _store(rng, path=ARRAYS)
    hist = [i for i in co.counts if co.counts[i] and co.pops.get(i, 0) > 0][:8]
    before = _both(co, hist, 100)
    gone = before[0][0]
    co.remove(gone)
    after = _both(co, hist, 100)
    assert gone not in {j for j, _, _ in after}
    assert after  # something is still scored
    # A history item taken down: its row is gone, the others still score.
    co.remove(hist[0])
    assert _both(co, hist, 100)


def test_zero_pops_and_empty_rows_contribute_nothing() -> None:
    co = CoOccurrence()
    co.array_min_entries = ARRAYS
    co.counts = {"h1": {"a": 1.0, "b": 2.0}, "h2": {}, "h3": {"c": 5.0}}
    co.pops = {"h1": 1.0, "h2": 3.0, "h3": 0.0, "a": 0.0, "b": 4.0, "c": 1.0}
    assert _both(co, ["h1", "h2", "h3"], 5) == [("b", 1.0, "h1")]
    assert _both(co, ["h2", "h3"], 5) == []
    assert _both(co, ["h1"], 0) == []


def test_learned_cooc_views_match_the_row_scan() -> None:
    rng = random.Random(11)
    ids = [f"i{k}" for k in range(60)]
    compared = 0
    for _ in range(30):
        co = _store(rng)
        liked = [rng.choice(ids) for _ in range(rng.randint(0, 60))]
        watched = liked + [rng.choice(ids) for _ in range(rng.randint(0, 20))]
        items = rng.sample(ids + ["never-seen"], rng.randint(0, 40))
        items += items[:3]  # a repeated candidate
        got = cooc_views(co, (liked, watched), items)
        assert np.array_equal(got, cooc_views_reference(co, (liked, watched), items))  # to the bit
        assert got.shape == (len(items), 2 * len(COOC_VIEWS))
        compared += int((got > 0).sum())
        co.counts[liked[0] if liked else "i0"] = {"i1": 3.0}  # a rewritten row
        assert np.array_equal(cooc_views(co, (liked, watched), items),
                              cooc_views_reference(co, (liked, watched), items))
    assert compared > 500


def test_unique_codes_inverts_and_locates() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        codes = rng.integers(0, 40, size=rng.integers(1, 80))
        uniq, inv, where = _unique_codes(codes, 40)
        assert sorted(uniq.tolist()) == sorted(set(codes.tolist()))
        assert np.array_equal(uniq[inv], codes)
        assert np.array_equal(codes[where[uniq]], uniq)


def test_row_cache_is_bounded_and_swept() -> None:
    cache = RowArrays(max_entries=16)  # 8 rows of 2
    counts = {f"r{k}": {f"j{k}": 1.0, f"j{k + 1}": 2.0} for k in range(20)}
    for i, row in counts.items():
        codes, vals = cache.get(i, row)
        assert cache.names(codes) == list(row) and vals.tolist() == list(row.values())
    assert len(cache) == 8 and cache.entries == 16  # the 8 most recently used
    kept = list(counts)[-8:]
    for i in kept[:3]:
        counts[i] = dict(counts[i])  # replaced: the cached entries are stale
    del counts[kept[3]]
    assert cache.sweep(counts) == 4 and len(cache) == 4 and cache.entries == 8
    codes, vals = cache.get(kept[0], counts[kept[0]])  # rebuilt from the new object
    assert cache.builds == 21 and vals.tolist() == [1.0, 2.0] and cache.entries == 10
    cache.clear()
    assert len(cache) == 0 and cache.entries == 0
    cache.get(kept[0], counts[kept[0]])
    assert cache.builds == 22 and cache.entries == 2
    big = {f"b{k}": 1.0 for k in range(40)}  # over the whole budget: kept alone
    cache.get("big", big)
    assert len(cache) == 1 and cache.entries == 40


def test_a_rewritten_row_reuses_the_codes_of_its_prefix_only_when_the_prefix_is_the_same():
    from streams.ranking.cooc_rows import RowArrays

    cache = RowArrays()
    versions = [
        {"a": 1.0, "b": 2.0},
        {"a": 1.0, "b": 3.0, "c": 1.0},  # counts changed, a neighbour appended: the prefix's codes reused
        {"a": 1.0, "b": 3.0, "c": 1.0},  # a new dict with the same neighbours
        {"b": 3.0, "a": 1.0, "c": 2.0, "d": 1.0},  # reordered (a pruned row is rebuilt in another order)
        {"d": 1.0},  # shorter
        {"d": 1.0, "e": 5.0, "f": 1.0},
    ]
    for row in versions:
        codes, counts = cache.get("x", row)
        assert cache.names(codes) == list(row)
        assert counts.tolist() == list(row.values())


def test_coded_pops_stays_equal_to_its_dict_through_every_kind_of_change() -> None:
    """Every way a dict changes keeps the by-code array equal to ``float(pops.get(j, 0.0))``,
    including ids interned by rows after the last write (they read 0.0)."""
    rng = random.Random(5)
    interner = RowArrays()
    pops = CodedPops(interner, {"a": 2, "b": 3.5})
    ids = [f"i{k}" for k in range(3000)]  # past the array's first capacity: it grows
    for step in range(20000):
        j, op = rng.choice(ids), rng.random()
        if op < 0.5:
            pops[j] = float(rng.randint(0, 9))
        elif op < 0.6:
            pops.pop(j, None)
        elif op < 0.65 and j in pops:
            del pops[j]
        elif op < 0.7:
            pops.update({j: 1.5}, **{"kw": 4.0})
        elif op < 0.72:
            pops.setdefault(j, 7.0)
        elif op < 0.73 and pops:
            pops.popitem()
        elif op < 0.75:
            interner.intern([f"row-only-{step}"])  # a neighbour id no popularity was ever written for
        elif op < 0.7501:
            pops.clear()
    codes = np.arange(len(interner.code))
    names = interner.names(codes)
    want = np.array([float(pops.get(j, 0.0)) for j in names])
    assert np.array_equal(pops.at(codes), want)
    assert any(n.startswith("row-only-") for n in names) and len(pops) > 100
    with pytest.raises(KeyError):
        pops.pop("never-there")
    copied = CoOccurrence.from_dict(CoOccurrence(pops=dict(pops)).to_dict())
    assert isinstance(copied.pops, CodedPops) and dict(copied.pops) == dict(pops)
    twin = copy.deepcopy(copied)  # rebuilt through __init__: the copy's array indexes the copy's interner
    assert twin.pops.interner is twin._row_arrays and dict(twin.pops) == dict(pops)
    codes = np.array(twin._row_arrays.codes_of(pops), dtype=np.intp)
    assert np.array_equal(twin.pops.at(codes), [float(v) for v in pops.values()])
