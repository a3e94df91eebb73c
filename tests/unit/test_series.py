"""The dashboard's series maths: rates from counters, quantiles from histogram bucket deltas."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.web.series import Series, bucket_increase, quantile, rate, read

INF = math.inf


def test_rate_is_increase_per_second_and_a_reset_counts_the_new_value():
    assert rate(100.0, 130.0, 2.0) == 15.0
    assert rate(100.0, 100.0, 1.0) == 0.0
    # A counter that went down restarted from 0: its whole value is the increase.
    assert rate(100.0, 6.0, 2.0) == 3.0
    assert rate(1.0, 5.0, 0.0) == 0.0


def test_quantile_interpolates_inside_the_bucket_holding_the_rank():
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 in (0.5, 1].
    buckets = ((0.1, 4.0), (0.5, 8.0), (1.0, 10.0), (INF, 10.0))
    # rank 5 is the 1st of 4 in (0.1, 0.5]: 0.1 + 0.4 * 1/4
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    # rank 9.9 is 1.9 of 2 into (0.5, 1]
    assert quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 1.9 / 2)
    # rank 2 is half-way into the first bucket, whose lower bound is 0
    assert quantile(0.2, buckets) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_empty_is_none():
    assert quantile(0.99, ((0.1, 1.0), (1.0, 1.0), (INF, 10.0))) == 1.0
    assert quantile(0.5, ((0.1, 0.0), (INF, 0.0))) is None
    assert quantile(0.5, ()) is None
    with pytest.raises(ValueError, match="within"):
        quantile(1.5, ((INF, 1.0),))


def test_quantile_skips_empty_buckets_below_the_rank():
    # Everything in (0.25, 0.5]: the median is inside it, not at the empty buckets' bounds.
    buckets = ((0.1, 0.0), (0.25, 0.0), (0.5, 2.0), (INF, 2.0))
    assert quantile(0.5, buckets) == pytest.approx(0.375)
    assert quantile(0.0, buckets) == pytest.approx(0.25)


def test_bucket_increase_is_per_bucket_and_counts_new_bounds_from_zero():
    before = ((0.1, 3.0), (1.0, 5.0), (INF, 6.0))
    after = ((0.1, 4.0), (1.0, 9.0), (INF, 12.0))
    assert bucket_increase(before, after) == ((0.1, 1.0), (1.0, 4.0), (INF, 6.0))
    assert bucket_increase((), after) == after


def _registry():
    reg = CollectorRegistry()
    events = Counter("avrec_events_in", "x", ["topic"], registry=reg)
    lists = Counter("avrec_lists_out", "x", ["topic"], registry=reg)
    lag = Gauge("avrec_consumer_lag", "x", ["topic", "partition"], registry=reg)
    fresh = Histogram("avrec_freshness_seconds", "x", buckets=(0.1, 0.5, 1.0), registry=reg)
    return reg, events, lists, lag, fresh


def test_read_sums_over_labels():
    reg, events, lists, lag, fresh = _registry()
    events.labels("uploads").inc(3)
    events.labels("interactions").inc(4)
    lag.labels("interactions", "0").set(5)
    lag.labels("interactions", "1").set(2)
    fresh.observe(0.3)
    r = read(reg, now=1.0)
    assert (r.events, r.lists, r.lag) == (7.0, 0.0, 7.0)
    assert r.freshness == ((0.1, 0.0), (0.5, 1.0), (1.0, 1.0), (INF, 1.0))


def test_series_samples_rates_and_interval_quantiles_in_a_bounded_window():
    reg, events, lists, lag, fresh = _registry()
    series = Series(reg, every_s=1.0, window_s=3.0)
    # Slow lists before the first reading must not leak into the interval's quantiles.
    for _ in range(50):
        fresh.observe(0.9)
    assert series.sample(now=10.0, wall_t=100.0) is None  # the baseline reading
    events.labels("interactions").inc(20)
    lists.labels("recommendations").inc(10)
    for _ in range(10):
        fresh.observe(0.05)
    lag.labels("interactions", "3").set(4)
    s = series.sample(now=12.0, wall_t=102.0)
    assert (s.events_per_s, s.lists_per_s, s.lag) == (10.0, 5.0, 4.0)
    assert s.freshness_p50_s == pytest.approx(0.05)
    assert s.freshness_p99_s == pytest.approx(0.099)
    quiet = series.sample(now=13.0, wall_t=103.0)
    assert quiet.events_per_s == 0.0 and quiet.freshness_p50_s is None  # no list: no quantile
    series.sample(now=14.0, wall_t=104.0)
    series.sample(now=15.0, wall_t=105.0)
    out = series.to_json()
    assert out["every_s"] == 1.0
    assert out["t"] == [103.0, 104.0, 105.0]  # the window keeps the newest 3
    assert set(out) == {"every_s", "t", "events_per_s", "lists_per_s", "lag", "freshness_p50_s",
                        "freshness_p99_s"}
    assert all(len(out[k]) == 3 for k in out if k != "every_s")
