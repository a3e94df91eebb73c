"""avrec's own Prometheus metrics, in a registry of their own (served at ``/metrics``).

A registry of our own, not prometheus-client's global one: the worker exposes
exactly what this module declares (no process collectors registered twice when
a test imports the module again), and a test can read a value back with
``REGISTRY.get_sample_value``.

Names follow Prometheus' conventions: base units (seconds), ``_total`` for
counters, ``_ratio`` for 0..1 gauges. Each worker counts what it handled; with N
workers Prometheus sums them (``sum by (topic) (rate(avrec_events_in_total[1m]))``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

# -- the stream ------------------------------------------------------------------------------
EVENTS_IN = Counter("avrec_events_in", "Records read from an input topic.", ["topic"], registry=REGISTRY)
LISTS_OUT = Counter("avrec_lists_out", "Recommendation lists published.", ["topic"], registry=REGISTRY)
# Filled at scrape time from the Faust consumer's positions and high-water marks.
CONSUMER_LAG = Gauge("avrec_consumer_lag", "Records not yet read by this worker, per assigned partition.",
                     ["topic", "partition"], registry=REGISTRY)
FRESHNESS = Histogram(
    "avrec_freshness_seconds", "From an event's own time to its user's list being published.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY)
DEAD_LETTERS = Counter("avrec_dead_letters", "Records sent to a dead-letter topic.", ["topic", "stage"],
                       registry=REGISTRY)

# -- the services it calls -------------------------------------------------------------------
_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRITON_SECONDS = Histogram("avrec_triton_request_seconds", "Triton calls (one attempt each).", ["model"],
                           buckets=_CALL_BUCKETS, registry=REGISTRY)
TRITON_ERRORS = Counter("avrec_triton_errors", "Failed Triton calls.", ["model"], registry=REGISTRY)
MILVUS_SECONDS = Histogram("avrec_milvus_request_seconds", "Milvus calls.", ["operation"],
                           buckets=_CALL_BUCKETS, registry=REGISTRY)
MILVUS_ERRORS = Counter("avrec_milvus_errors", "Failed Milvus calls.", ["operation"], registry=REGISTRY)
# Users' ANN searches answered from the per-user candidate cache ("hit") or sent to Milvus ("miss").
ANN_CACHE_LOOKUPS = Counter("avrec_ann_cache_lookups", "Per-user ANN candidate lookups by outcome (hit, miss).",
                            ["outcome"], registry=REGISTRY)
# 0 closed (calls flow), 1 half-open (one probe call allowed), 2 open (calls fail fast).
BREAKER_STATE = Gauge("avrec_circuit_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                      ["service"], registry=REGISTRY)
BREAKER_CODES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def breaker_code(state: str) -> int:
    """The gauge's value for a breaker state (encoders/breaker.py spells them closed, half-open, open)."""
    try:
        return BREAKER_CODES[state]
    except KeyError:
        raise ValueError(f"unknown circuit-breaker state {state!r}; expected one of {sorted(BREAKER_CODES)}") from None

# -- what the lists are ----------------------------------------------------------------------
MODEL = Info("avrec_model", "The model that ranks this worker's lists.", registry=REGISTRY)
COVERAGE = Gauge("avrec_catalogue_coverage_ratio",
                 "Distinct items in the recent lists over the items in the catalogue.", registry=REGISTRY)
COLD_START = Gauge("avrec_cold_start_lists_ratio",
                   "Share of the recent lists served by fallback sources alone (fresh, trending).",
                   registry=REGISTRY)

# -- online metrics: impressions and the interactions attributed to them -----------------------
IMPRESSIONS = Counter("avrec_impressions", "Lists shown to users (impression events).", ["model_version"],
                      registry=REGISTRY)
IMPRESSED_ITEMS = Counter("avrec_impressed_items", "Items shown in those lists.", ["model_version"],
                          registry=REGISTRY)
CLICKS = Counter("avrec_impression_clicks",
                 "Shown items the user then interacted with (once per shown item).", ["model_version"],
                 registry=REGISTRY)
HITS = Counter("avrec_impression_hits", "Impressions with at least one click.", ["model_version"],
               registry=REGISTRY)


M = TypeVar("M", Counter, Gauge, Histogram)


def children(metric: M) -> Callable[[str], M]:
    """``label -> metric.labels(label)``, cached: for one-label metrics updated on hot paths.

    ``labels()`` takes a lock and builds a key tuple on every call; a dict lookup is a
    fraction of that. Not for gauges that are cleared (CONSUMER_LAG): a cleared child
    is no longer exported, so a cached one would be updated for nothing.
    """
    cache: dict[str, M] = {}

    def child(label: str) -> M:
        c = cache.get(label)
        if c is None:
            c = cache[label] = metric.labels(label)
        return c

    return child
