"""The dashboard's summary and dead-letter rows, from a registry and records built here."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from streams.records import dead_letter, encode
from streams.web.dashboard import dead_letter_row, page_html, parse_limit, summary


def _families(**setup):
    reg = CollectorRegistry()
    imp = Counter("avrec_impressions", "x", ["model_version"], registry=reg)
    items = Counter("avrec_impressed_items", "x", ["model_version"], registry=reg)
    clicks = Counter("avrec_impression_clicks", "x", ["model_version"], registry=reg)
    hits = Counter("avrec_impression_hits", "x", ["model_version"], registry=reg)
    breaker = Gauge("avrec_circuit_breaker_state", "x", ["service"], registry=reg)
    model = Info("avrec_model", "x", registry=reg)
    Gauge("avrec_catalogue_coverage_ratio", "x", registry=reg).set(0.25)
    return reg, imp, items, clicks, hits, breaker, model


def test_summary_rates_per_model_version_and_breaker_names():
    reg, imp, items, clicks, hits, breaker, model = _families()
    model.info({"model_version": "ranker-7", "fusion": "learned"})
    imp.labels("ranker-7").inc(4)
    items.labels("ranker-7").inc(40)
    clicks.labels("ranker-7").inc(6)
    hits.labels("ranker-7").inc(3)
    imp.labels("hybrid-v1").inc(2)  # an older version still counted: no items shown yet
    breaker.labels("triton").set(2)
    breaker.labels("milvus").set(0)
    out = summary(list(reg.collect()))
    assert out["model_version"] == "ranker-7" and out["model"]["fusion"] == "learned"
    by_version = {row["model_version"]: row for row in out["online"]}
    assert by_version["ranker-7"] == {"model_version": "ranker-7", "impressions": 4, "impressed_items": 40,
                                      "clicks": 6, "hits": 3, "ctr": 0.15, "hit_rate": 0.75}
    assert by_version["hybrid-v1"]["ctr"] is None and by_version["hybrid-v1"]["hit_rate"] == 0.0
    assert out["breakers"] == {"triton": "open", "milvus": "closed"}
    assert out["coverage"] == 0.25


def test_summary_falls_back_to_the_settings_model_before_the_info_is_set():
    reg, *_ = _families()
    out = summary(list(reg.collect()))
    assert out["model_version"] == "hybrid-v1" and out["online"] == []


def test_dead_letter_row_shows_the_reason_key_origin_and_original():
    dl = dead_letter(b'{"user_id": 1}', b"u-\xc3\xa9", "validate: user_id: not a string", "validate",
                     "interactions", 3, 41, failed_at=1_700_000_000.0)
    row = dead_letter_row("interactions.dlq", 0, 7, encode(dl))
    assert row == {"dlq_topic": "interactions.dlq", "dlq_partition": 0, "dlq_offset": 7, "stage": "validate",
                   "error": "validate: user_id: not a string", "topic": "interactions", "partition": 3,
                   "offset": 41, "key": "u-é", "failed_at": 1_700_000_000.0, "original_size": 14,
                   "original_preview": '{"user_id": 1}'}


def test_a_record_that_is_not_a_dead_letter_is_shown_as_such():
    row = dead_letter_row("uploads.dlq", 0, 3, b"garbage")
    assert row["stage"] == "unreadable" and row["error"].startswith("not a dead-letter record")


@pytest.mark.parametrize("raw, want", [(None, 50), ("", 50), ("7", 7), ("500", 50)])
def test_limit_defaults_to_and_is_capped_at_the_most(raw, want):
    assert parse_limit(raw, 50) == want


@pytest.mark.parametrize("raw", ["x", "0", "-1", "2.5"])
def test_a_bad_limit_says_what_is_allowed(raw):
    with pytest.raises(ValueError, match="whole number from 1 to 50"):
        parse_limit(raw, 50)


def test_the_page_is_one_self_contained_document():
    html = page_html()
    assert "<style>" in html and "function drawChart" in html
    # Nothing fetched from elsewhere: no stylesheet link, no script source, no absolute URL.
    assert not re.search(r"<link[^>]+href=|<script[^>]+src=|https?://", html)
    for element in ("chart-throughput", "chart-lag", "chart-freshness", "user-list", "item-neighbours",
                    "dead-letters", "online-table"):
        assert f'id="{element}"' in html
