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
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.search(r"^interactions: \d+ events/s over [\d.]+s \(3 batches, 10\.0 events each\); "
                     r"per batch ms: lists [\d.]+; per batch: lists 5\.0, item fetches 0\.7$", line), line


def test_without_counts_the_line_has_no_counts_part(caplog):
    stats = BatchStats("uploads", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="streams.services.stats"):
        with stats.stage("encode"):
            pass
        stats.batch_done(4)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "per batch ms: encode" in line and "per batch:" not in line.replace("per batch ms:", "")
