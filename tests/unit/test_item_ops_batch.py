"""apply_ops (a record's ops, each touched row copied once) builds the rows apply_op builds op by op."""

from __future__ import annotations

import numpy as np

from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.item_ops import apply_op, apply_ops, pair_ops, with_trend
from streams.ranking.trending import DecayedCounter


def _ops(rng: np.random.Generator, n_events: int, n_items: int) -> list:
    histories: dict[int, list[str]] = {}
    cooc = CoOccurrence(max_neighbors=8, window=6)  # small rows: pruning happens mid-batch
    out = []
    for e in range(n_events):
        user = int(rng.integers(0, 30))
        item = f"i{int(rng.zipf(1.3)) % n_items}"
        hist = histories.setdefault(user, [])
        ops = pair_ops(cooc, hist, item, weight=float(rng.choice([1.0, 0.5, 2.0]))) if item not in hist else []
        out.extend(with_trend(ops, item, 1000.0 + e, 1.0))
        if item not in hist:
            hist.append(item)
    return out


def _stores():
    return CoOccurrence(max_neighbors=8, window=6), DecayedCounter(3600.0, 1000)


def test_batched_ops_build_the_same_rows_pops_and_trending_as_one_by_one():
    rng = np.random.default_rng(7)
    ops = _ops(rng, 3000, 120)
    a_cooc, a_tr = _stores()
    b_cooc, b_tr = _stores()
    for start in range(0, len(ops), 500):  # several records, on top of each other's rows
        for op in ops[start:start + 500]:
            apply_op(op, a_cooc, a_tr)
        apply_ops(ops[start:start + 500], b_cooc, b_tr)
    assert any(len(r) >= 8 for r in a_cooc.counts.values())  # pruning did happen
    assert a_cooc.counts == b_cooc.counts
    assert [list(r) for r in a_cooc.counts.values()] == [list(r) for r in b_cooc.counts.values()]  # order too
    assert a_cooc.pops == b_cooc.pops
    items = sorted(a_cooc.pops)
    assert np.array_equal(a_tr.score(items, 5000.0), b_tr.score(items, 5000.0))


def test_every_touched_row_is_replaced_not_changed_in_place():
    cooc, tr = _stores()
    apply_ops([op for op in pair_ops(cooc, ["a", "b"], "c")], cooc, tr)
    before = {i: r for i, r in cooc.counts.items()}
    snapshot = {i: dict(r) for i, r in before.items()}
    apply_ops(pair_ops(cooc, ["a", "b", "c"], "d"), cooc, tr)
    for i, r in before.items():
        assert r == snapshot[i]  # the old dicts were not mutated
        assert cooc.counts[i] is not r  # a, b and c all got a pair with d: new row objects
