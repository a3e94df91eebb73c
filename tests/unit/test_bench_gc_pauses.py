"""The benchmarks' record of their own garbage-collection pauses (bench/gc_pauses.py)."""

from __future__ import annotations

import gc
import time

from bench.gc_pauses import GcPauses, watched_collections


def test_a_full_collection_inside_the_block_is_recorded_and_none_after_it():
    t0 = time.perf_counter()
    with watched_collections() as pauses:
        gc.collect()
    gc.collect()  # after the block: the hook is gone
    report = pauses.report(t0, slow_ms=0.0)
    assert report["full_collections"] == 1
    assert report["collections"] == len(pauses.pauses) >= 1
    assert report["max_ms"] >= 0.0
    # slow_ms=0 lists every pause: seconds into the phase, ms, generation
    assert len(report["slow"]) == report["collections"]
    assert any(g == 2 for _, _, g in report["slow"])
    assert all(at >= 0.0 for at, _, _ in report["slow"])


def test_report_keeps_only_the_pauses_at_or_over_the_threshold():
    pauses = GcPauses()
    pauses.pauses = [(10.0, 0.3, 0), (10.5, 12.0, 1), (11.0, 230.0, 2)]
    report = pauses.report(t0=10.0, slow_ms=10.0)
    assert report == {"collections": 3, "full_collections": 1, "max_ms": 230.0,
                      "slow": [[0.5, 12.0, 1], [1.0, 230.0, 2]]}


def test_a_stop_without_a_start_is_ignored():
    pauses = GcPauses()
    pauses("stop", {"generation": 0})
    assert pauses.pauses == []
