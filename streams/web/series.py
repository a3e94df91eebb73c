"""The dashboard's time series: a ring buffer of the worker's own metrics, one sample a second.

The charts need rates and recent quantiles, while the registry holds running totals
(counters, histogram buckets). Each sample therefore reads the totals once and turns
the difference from the previous reading into

* events/s and lists/s: the increase of ``avrec_events_in_total`` / ``avrec_lists_out_total``
  (all topics) over the seconds between the readings;
* lag: the sum of ``avrec_consumer_lag`` over this worker's partitions, as it is now;
* freshness p50/p99: quantiles of the lists published *during the interval*, from the
  increase of each ``avrec_freshness_seconds`` bucket (as Prometheus' ``histogram_quantile``
  over ``rate()`` does), not of everything since the worker started.

The maths are pure functions (unit-tested); :class:`Series` only keeps the samples.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from prometheus_client import CollectorRegistry

EVENTS_TOTAL = "avrec_events_in_total"
LISTS_TOTAL = "avrec_lists_out_total"
LAG = "avrec_consumer_lag"
FRESHNESS_BUCKET = "avrec_freshness_seconds_bucket"

Buckets = tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), by increasing bound


@dataclass(frozen=True)
class Reading:
    """The totals a sample is computed from, read at monotonic time ``t``."""

    t: float
    events: float
    lists: float
    lag: float
    freshness: Buckets


def sample_sums(families: Iterable[Any]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One pass over ``registry.collect()``: every sample's value summed over its labels, and
    the histogram buckets by sample name and ``le`` (summed over any other label)."""
    sums: dict[str, float] = {}
    buckets: dict[str, dict[str, float]] = {}
    for family in families:
        for s in family.samples:
            if s.name.endswith("_bucket") and "le" in s.labels:
                per_le = buckets.setdefault(s.name, {})
                per_le[s.labels["le"]] = per_le.get(s.labels["le"], 0.0) + s.value
            else:
                sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums, buckets


def as_buckets(per_le: dict[str, float]) -> Buckets:
    """``{"0.1": 3, "+Inf": 5, ...}`` as ``((0.1, 3.0), ..., (inf, 5.0))`` ordered by bound."""
    return tuple(sorted((float(le), count) for le, count in per_le.items()))


def read(registry: CollectorRegistry, now: float | None = None) -> Reading:
    sums, buckets = sample_sums(registry.collect())
    return Reading(
        t=time.monotonic() if now is None else now,
        events=sums.get(EVENTS_TOTAL, 0.0),
        lists=sums.get(LISTS_TOTAL, 0.0),
        lag=sums.get(LAG, 0.0),
        freshness=as_buckets(buckets.get(FRESHNESS_BUCKET, {})),
    )


def rate(previous: float, current: float, seconds: float) -> float:
    """Per-second increase of a counter. A counter that went down was reset (a restarted
    collector): all of its current value is new, as Prometheus' ``rate()`` counts it."""
    if seconds <= 0:
        return 0.0
    increase = current - previous if current >= previous else current
    return increase / seconds


def bucket_increase(previous: Buckets, current: Buckets) -> Buckets:
    """Each bucket's increase between two readings (bounds missing before count from 0)."""
    before = dict(previous)
    return tuple((le, max(0.0, count - before.get(le, 0.0))) for le, count in current)


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of observations counted in cumulative ``buckets``; None without any.

    Linear interpolation inside the bucket holding the rank, from the previous bound (0 for
    the first bucket), like Prometheus' ``histogram_quantile``. A rank in the ``+Inf``
    bucket returns the highest finite bound: the histogram cannot say more than "above it".
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(le):
                return lower_bound
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        if not math.isinf(le):
            lower_bound = le
        lower_count = count
    return lower_bound


@dataclass(frozen=True)
class Sample:
    t: float  # wall-clock seconds (the page labels its axis with it)
    events_per_s: float
    lists_per_s: float
    lag: float
    freshness_p50_s: float | None
    freshness_p99_s: float | None


def between(previous: Reading, current: Reading, wall_t: float) -> Sample:
    """What happened between two readings."""
    dt = current.t - previous.t
    fresh = bucket_increase(previous.freshness, current.freshness)
    return Sample(
        t=wall_t,
        events_per_s=rate(previous.events, current.events, dt),
        lists_per_s=rate(previous.lists, current.lists, dt),
        lag=current.lag,
        freshness_p50_s=quantile(0.5, fresh),
        freshness_p99_s=quantile(0.99, fresh),
    )


class Series:
    """The last ``window_s`` of samples, one every ``every_s`` (the oldest drop out)."""

    FIELDS = ("events_per_s", "lists_per_s", "lag", "freshness_p50_s", "freshness_p99_s")

    def __init__(self, registry: CollectorRegistry, every_s: float, window_s: float) -> None:
        self.registry = registry
        self.every_s = every_s
        self.samples: deque[Sample] = deque(maxlen=max(2, int(math.ceil(window_s / every_s))))
        self._last: Reading | None = None

    def sample(self, now: float | None = None, wall_t: float | None = None) -> Sample | None:
        """Read the registry; from the second call on, append what changed since the last one."""
        current = read(self.registry, now)
        previous, self._last = self._last, current
        if previous is None:
            return None
        s = between(previous, current, time.time() if wall_t is None else wall_t)
        self.samples.append(s)
        return s

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"every_s": self.every_s, "t": [round(s.t, 3) for s in self.samples]}
        for name in self.FIELDS:
            out[name] = [_round(getattr(s, name)) for s in self.samples]
        return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def labelled(families: Iterable[Any], sample_name: str, label: str) -> dict[str, float]:
    """A sample's values by one label (summed over the others): ``{"hybrid-v1": 12.0, ...}``.
    ``families`` is one ``registry.collect()`` pass, made into a list by the caller."""
    out: dict[str, float] = {}
    for family in families:
        for s in family.samples:
            if s.name == sample_name:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
    return out
