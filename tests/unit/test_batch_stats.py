"""BatchStats: the worker's one-line throughput report, with its per-batch stage times and counts."""

from __future__ import annotations

import logging
import re

from streams.services.stats import BatchStats


def test_the_line_reports_events_stage_times_and_counts_per_batch(caplog):
    stats = BatchStats("interactions", every_s=3600.0)
    for lists in (3, 5):
        with stats.stage("lists"):
            pass
        stats.count("lists", lists)
        stats.count("item fetches", 1)
        stats.batch_done(10)
    assert not caplog.records  # nothing before every_s has passed
    stats.every_s = 0.0
    with caplog.at_level(logging.INFO, logger="streams.services.stats"):
        stats.count("lists", 7)
        stats.batch_done(10)
    line, slowest = [r.getMessage() for r in caplog.records]
    assert slowest.startswith("interactions: slowest batch ")
    assert re.search(r"^interactions: \d+ events/s over [\d.]+s \(3 batches, 10\.0 events each\); "
                     r"per batch ms: lists [\d.]+; per batch: lists 5\.0, item fetches 0\.7$", line), line


def test_without_counts_the_line_has_no_counts_part(caplog):
    stats = BatchStats("uploads", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="streams.services.stats"):
        with stats.stage("encode"):
            pass
        stats.batch_done(4)
    line = caplog.records[0].getMessage()
    assert "per batch ms: encode" in line and "per batch:" not in line.replace("per batch ms:", "")


def test_the_slowest_batch_of_the_period_is_named_with_its_stages(caplog, monkeypatch):
    clock = iter([0.0, 0.002, 0.002, 0.003,  # batch 1: items 2 ms, lists 1 ms
                  1.0, 1.010, 1.010, 1.090,  # batch 2: items 10 ms, lists 80 ms (the slowest)
                  2.0, 2.001, 2.001, 2.005])  # batch 3: items 1 ms, lists 4 ms
    monkeypatch.setattr("streams.services.stats.time.perf_counter", lambda: next(clock))
    stats = BatchStats("interactions", every_s=3600.0)
    for events in (5, 7, 9):
        with stats.stage("items"):
            pass
        with stats.stage("lists"):
            pass
        if events == 9:
            stats.every_s = 0.0
        with caplog.at_level(logging.INFO, logger="streams.services.stats"):
            stats.batch_done(events)
    slowest = caplog.records[-1].getMessage()
    assert slowest == "interactions: slowest batch 90.0 ms (7 events): lists 80.0, items 10.0", slowest
    # The next period starts over: its slowest batch is its own.
    caplog.clear()
    monkeypatch.setattr("streams.services.stats.time.perf_counter", iter([3.0, 3.003]).__next__)
    with caplog.at_level(logging.INFO, logger="streams.services.stats"):
        with stats.stage("items"):
            pass
        stats.batch_done(2)
    assert caplog.records[-1].getMessage() == "interactions: slowest batch 3.0 ms (2 events): items 3.0"


def test_a_part_of_a_stage_is_reported_but_not_counted_twice(caplog, monkeypatch):
    """``"lists: rank"`` is inside ``"lists"``: the slowest batch is timed on the stages alone."""
    clock = iter([0.0, 0.050, 0.010, 0.040,  # lists 50 ms, its part "lists: rank" 30 ms (inside it)
                  1.0, 1.020])  # state 20 ms
    monkeypatch.setattr("streams.services.stats.time.perf_counter", lambda: next(clock))
    stats = BatchStats("interactions", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="streams.services.stats"):
        with stats.stage("lists"):
            pass
        with stats.stage("lists: rank"):
            pass
        with stats.stage("state"):
            pass
        stats.batch_done(3)
    line, slowest = [r.getMessage() for r in caplog.records]
    assert "per batch ms: lists 50.0, lists: rank 30.0, state 20.0" in line, line
    assert slowest == "interactions: slowest batch 70.0 ms (3 events): lists 50.0, lists: rank 30.0, state 20.0"
