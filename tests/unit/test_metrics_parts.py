"""The worker's metrics, their pure parts: recent lists, freshness, lag arithmetic, breaker and call hooks."""

from __future__ import annotations

import asyncio
import math
import socket
from types import SimpleNamespace

import numpy as np
import pytest
from faust.types import TP

from encoders.breaker import CircuitBreaker
from encoders.client import TritonClient
from encoders.exceptions import TritonUnavailable
from streams.items import wire
from streams.items.store import ItemStore
from streams.ranking import RankingSettings, RecommendedItem
from streams.ranking.learned import FEATURES, LinearRanker
from streams.services.ranker_reload import ActiveRanker, adopt
from streams.settings import Settings, TritonSettings
from streams.web.calls import CallMetrics, watch_breaker
from streams.web.instrument import model_labels, set_model_info
from streams.web.lag import PartitionLag, partition_lags, refresh_consumer_lag
from streams.web.list_stats import CatalogueSize, ListMetrics, RecentLists, is_personal
from streams.web.metrics import (CONSUMER_LAG, FRESHNESS, LISTS_OUT, REGISTRY, TRITON_ERRORS, TRITON_SECONDS,
                                 breaker_code)


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def item(item_id: str, **sources: float) -> RecommendedItem:
    return RecommendedItem(item_id, sum(sources.values()), ["r"], {"ann": 0.0, "cooc": 0.0, "fresh": 0.0,
                                                                   "trending": 0.0, **sources})


# -- recent lists: coverage and cold-start share -------------------------------------------------

def test_personal_means_an_ann_or_cooc_contribution_anywhere_in_the_list():
    assert not is_personal([item("a", fresh=0.3), item("b", trending=0.2)])
    assert is_personal([item("a", fresh=0.3), item("b", cooc=0.01)])
    assert is_personal([item("a", ann=0.5)])
    assert not is_personal([])


def test_recent_lists_count_distinct_items_and_cold_lists_over_a_sliding_window():
    recent = RecentLists(3)
    recent.add(["a", "b"], personal=True)
    recent.add(["b", "c"], personal=False)
    assert recent.distinct_items == 3 and recent.coverage(10) == pytest.approx(0.3)
    assert recent.cold_start_ratio() == pytest.approx(0.5)
    recent.add(["c"], personal=False)
    recent.add(["d"], personal=True)  # ["a", "b"] falls out: "a" is gone, "b" still held by the second list
    assert len(recent) == 3
    assert recent.distinct_items == 3  # b, c, d
    assert recent.cold_start_ratio() == pytest.approx(2 / 3)
    recent.add(["e"], personal=True)  # ["b", "c"] out: "c" still held by ["c"]
    recent.add(["e"], personal=True)  # ["c"] out
    assert recent.distinct_items == 2 and recent.cold_start_ratio() == 0.0
    assert recent.coverage(2) == 1.0
    assert recent.coverage(1) == 1.0  # capped: the catalogue count can trail the lists
    assert recent.coverage(0) == 0.0


def test_recent_lists_reject_a_useless_size():
    with pytest.raises(ValueError, match="recent_lists"):
        RecentLists(0)


def test_empty_window_reports_zero_not_a_division_error():
    recent = RecentLists(5)
    assert recent.coverage(100) == 0.0 and recent.cold_start_ratio() == 0.0


def test_catalogue_size_is_the_replica_uploads_minus_takedowns_refreshed_at_most_every_few_seconds():
    store = ItemStore(RankingSettings(), partitions=1)
    now = [0.0]
    size = CatalogueSize(store, every_s=5.0, clock=lambda: now[0])
    for n, iid in enumerate(["a", "b", "c"]):
        store.apply(0, n, wire.encode_up(iid, f"v{iid}", 1000.0 + n, "creator"))
    store.apply(0, 3, wire.encode_down("b"))
    store.apply(0, 4, wire.encode_down("never-uploaded"))
    assert size() == 2
    store.apply(0, 5, wire.encode_up("d", "vd", 1010.0, "creator"))
    assert size() == 2  # cached
    now[0] = 5.0
    assert size() == 3


def test_published_lists_count_out_and_observe_freshness_only_for_real_event_times():
    metrics = ListMetrics(RecentLists(10))
    topic = "test-recs-freshness"
    count0, sum0 = value("avrec_freshness_seconds_count"), value("avrec_freshness_seconds_sum")
    metrics.published(topic, [item("a", ann=0.4)], event_ts=1000.0, produced_at=1002.5)
    metrics.published(topic, [item("b", fresh=0.4)], event_ts=2000.0, produced_at=1999.0)  # clock skew: 0
    metrics.published(topic, [item("c", fresh=0.4)], event_ts=0.0, produced_at=1999.0)  # no event time
    metrics.published(topic, [item("c", fresh=0.4)], event_ts=math.nan, produced_at=1999.0)
    assert value("avrec_lists_out_total", topic=topic) == 4
    assert value("avrec_freshness_seconds_count") - count0 == 2
    assert value("avrec_freshness_seconds_sum") - sum0 == pytest.approx(2.5)
    assert metrics.recent.cold_start_ratio() == pytest.approx(0.75)
    assert metrics.recent.distinct_items == 3
    metrics.count_catalogue_with(lambda: 6)
    metrics.export()  # the gauges read it when the registry is collected
    assert value("avrec_catalogue_coverage_ratio") == pytest.approx(0.5)
    assert value("avrec_cold_start_lists_ratio") == pytest.approx(0.75)
    assert LISTS_OUT.labels(topic) is LISTS_OUT.labels(topic)  # sanity: one series per topic
    assert FRESHNESS._upper_bounds[-1] == math.inf


# -- consumer lag -----------------------------------------------------------------------------

def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)  # what Faust's consumer.assignment() holds


def test_lag_is_highwater_minus_committed_or_the_position_before_a_first_commit():
    a0, a1, a2, b0, c0 = tp("a", 0), tp("a", 1), tp("a", 2), tp("b", 0), tp("app-table-changelog", 0)
    highwater = {a0: 100, a1: 7, a2: None, b0: 5, c0: 50}
    committed = {a0: 90, a1: None, b0: 9}
    position = {a1: 3}
    rows = partition_lags([b0, a0, a1, a2, c0], highwater.get, committed, position.get,
                          skip_topics={"app-table-changelog"})
    assert rows == [PartitionLag("a", 0, 10), PartitionLag("a", 1, 4), PartitionLag("b", 0, 0)]
    # No committed offset and no position: unknown, not reported as 0.
    assert partition_lags([a1], highwater.get, {}, lambda _: None) == []


def test_a_scrape_drops_the_partitions_no_longer_assigned():
    CONSUMER_LAG.labels(topic="revoked-topic", partition="3").set(42)
    assert value("avrec_consumer_lag", topic="revoked-topic", partition="3") == 42
    # A consumer not started yet (Faust's consumer before its thread runs aiokafka): no partitions at all.
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=None), tables=SimpleNamespace(changelog_topics=set()))
    refresh_consumer_lag(app)
    assert REGISTRY.get_sample_value("avrec_consumer_lag", {"topic": "revoked-topic", "partition": "3"}) is None


# -- breaker state -----------------------------------------------------------------------------

def test_breaker_codes_follow_the_documented_scale_and_reject_unknown_states():
    assert [breaker_code(s) for s in ("closed", "half-open", "open")] == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown circuit-breaker state"):
        breaker_code("ajar")


def test_breaker_gauge_follows_the_breaker_including_the_clock_driven_half_open():
    now = [1000.0]
    br = CircuitBreaker(failures=2, reset_s=5.0, name="test", clock=lambda: now[0])
    watch_breaker("unit-test-service", br)

    def state():
        return REGISTRY.get_sample_value("avrec_circuit_breaker_state", {"service": "unit-test-service"})

    assert state() == 0
    br.record_failure("down")
    br.record_failure("down")
    assert state() == 2
    now[0] += 5.0  # no call: the reset time alone makes it half-open
    assert state() == 1
    br.before_call()
    br.record_success()
    assert state() == 0


# -- calls -------------------------------------------------------------------------------------

def test_call_metrics_observe_every_call_and_count_failures():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    calls = CallMetrics(Histogram("t_seconds", "", ["op"], registry=reg), Counter("t_errors", "", ["op"], registry=reg))
    calls("search", 0.002, False)
    calls("search", 0.5, True)
    calls("get", 0.001, False)
    assert reg.get_sample_value("t_seconds_count", {"op": "search"}) == 2
    assert reg.get_sample_value("t_seconds_sum", {"op": "search"}) == pytest.approx(0.502)
    assert reg.get_sample_value("t_errors_total", {"op": "search"}) == 1
    assert reg.get_sample_value("t_errors_total", {"op": "get"}) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_triton_client_reports_each_attempt_to_a_closed_port_as_a_failed_request():
    model = "metrics_probe_model"
    settings = TritonSettings(url=f"127.0.0.1:{_free_port()}", max_retries=2, timeout_s=2.0, breaker_failures=10)
    client = TritonClient(settings, backoff_base=0.001, backoff_cap=0.002)
    client.observe = CallMetrics(TRITON_SECONDS, TRITON_ERRORS)
    seconds0 = value("avrec_triton_request_seconds_count", model=model)
    errors0 = value("avrec_triton_errors_total", model=model)

    async def go():
        try:
            with pytest.raises(TritonUnavailable):
                await client.infer(model, {"TEXT": np.array([[b"x"]], dtype=np.object_)}, ["EMBEDDING"])
        finally:
            await client.close()

    asyncio.run(go())
    assert value("avrec_triton_request_seconds_count", model=model) - seconds0 == 3  # 1 try + 2 retries
    assert value("avrec_triton_errors_total", model=model) - errors0 == 3


# -- model info --------------------------------------------------------------------------------

def test_model_info_names_the_published_version_and_follows_a_ranker_reload(tmp_path):
    settings = Settings()
    ctx = SimpleNamespace(settings=settings, active=ActiveRanker.of(settings.model_version, None),
                          on_model_change=set_model_info)
    set_model_info(ctx)
    labels = model_labels(ctx)
    assert labels["model_version"] == settings.model_version and labels["ranker"] == "none"
    assert value("avrec_model_info", **labels) == 1

    rng = np.random.default_rng(3)
    fitted = LinearRanker(rng.normal(size=len(FEATURES)), np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    assert adopt(ctx, fitted, tmp_path / "ranker.json")
    after = model_labels(ctx)
    assert after["ranker"] == fitted.fingerprint() and fitted.fingerprint() in after["model_version"]
    assert value("avrec_model_info", **after) == 1
    # An Info metric holds one label set: the old version is no longer exported.
    assert REGISTRY.get_sample_value("avrec_model_info", labels) is None
