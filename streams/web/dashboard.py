"""The dashboard: one page (``/dashboard``) and the JSON it polls.

* ``/dashboard/series``: the worker's rates, lag and freshness over the last minutes
  (``streams/web/series.py``), sampled by a Faust timer once every ``web.series_every_s``.
* ``/dashboard/summary``: model version, online metrics per model version, coverage,
  cold-start share and circuit breakers, read from avrec's Prometheus registry.
* ``/dashboard/dead-letters?limit=``: the newest records of the three dead-letter topics,
  read from Kafka (the only source that sees every worker's dead letters).

The page itself (``static/``) is self-contained (no CDN, no web fonts): it works on a
machine without internet access, as the worker does. Its user and item inspectors call
the read API (``/users/{id}``, ``/items/{id}``, ``streams/web/api.py``).

Like ``/metrics``, the series and summary describe *this* worker; with N workers each
serves its own (Prometheus and Grafana give the sum, deploy/).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import lru_cache
from importlib import resources
from typing import Any

from streams.app import app
from streams.records import decode_dead_letter
from streams.settings import KafkaSettings, get_settings
from streams.web.lag import refresh_consumer_lag
from streams.web.metrics import BREAKER_CODES, REGISTRY
from streams.web.series import Series, labelled, sample_sums

log = logging.getLogger(__name__)

_settings = get_settings()
SERIES = Series(REGISTRY, _settings.web.series_every_s, _settings.web.series_window_s)
BREAKER_NAMES = {code: name for name, code in BREAKER_CODES.items() if "-" not in name}
PREVIEW_CHARS = 200


@app.timer(interval=_settings.web.series_every_s, name="dashboard-series")
async def sample_series() -> None:
    """One reading of the registry per period (1 s): a few hundred samples summed, no I/O."""
    refresh_lag()
    SERIES.sample()


def refresh_lag() -> None:
    """The lag gauge is refilled from the consumer's memory when it is read (as ``/metrics``
    does), not on its own: without this the chart would show the last scrape's lag."""
    refresh_consumer_lag(app)


# -- the page --------------------------------------------------------------------------------
STYLE_LINK = '<link rel="stylesheet" href="dashboard.css">'
SCRIPT_TAG = '<script src="dashboard.js"></script>'


def asset(name: str) -> str:
    """A file of ``streams/web/static`` (packaged with the wheel)."""
    return resources.files("streams.web").joinpath("static", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def page_html() -> str:
    """The page with its stylesheet and script inlined: one response, one route, nothing else
    to fetch. They are separate files in ``static/`` only to be edited as CSS and JavaScript."""
    html = asset("dashboard.html")
    if STYLE_LINK not in html or SCRIPT_TAG not in html:
        raise RuntimeError("streams/web/static/dashboard.html lost its stylesheet link or script tag")
    return (html.replace(STYLE_LINK, f"<style>\n{asset('dashboard.css')}</style>")
                .replace(SCRIPT_TAG, f"<script>\n{asset('dashboard.js')}</script>"))


@app.page("/dashboard")
async def dashboard_page(web, request):
    # As text: aiohttp then labels it charset=utf-8, so non-ASCII labels survive any browser default.
    return web.text(page_html(), content_type="text/html")


# -- series and summary ----------------------------------------------------------------------
@app.page("/dashboard/series")
async def dashboard_series(web, request):
    return web.json(SERIES.to_json())


def summary(families: list[Any]) -> dict[str, Any]:
    """What the lists are and how users take them, from one ``REGISTRY.collect()`` pass."""
    sums, _ = sample_sums(families)
    # An Info never set still has its sample, without labels: then the settings say which model.
    info = [s.labels for f in families for s in f.samples
            if s.name == "avrec_model_info" and s.value and "model_version" in s.labels]
    impressions = labelled(families, "avrec_impressions_total", "model_version")
    items = labelled(families, "avrec_impressed_items_total", "model_version")
    clicks = labelled(families, "avrec_impression_clicks_total", "model_version")
    hits = labelled(families, "avrec_impression_hits_total", "model_version")
    online = []
    for version in sorted(set(impressions) | set(items) | set(clicks) | set(hits)):
        n_imp, n_items = impressions.get(version, 0.0), items.get(version, 0.0)
        n_clicks, n_hits = clicks.get(version, 0.0), hits.get(version, 0.0)
        online.append({
            "model_version": version, "impressions": int(n_imp), "impressed_items": int(n_items),
            "clicks": int(n_clicks), "hits": int(n_hits),
            # No impression yet: no rate to report (null), rather than a misleading 0.
            "ctr": n_clicks / n_items if n_items else None,
            "hit_rate": n_hits / n_imp if n_imp else None,
        })
    breakers = {service: BREAKER_NAMES.get(int(code), str(code))
                for service, code in labelled(families, "avrec_circuit_breaker_state", "service").items()}
    return {
        "model_version": info[0].get("model_version") if info else _settings.model_version,
        "model": info[0] if info else {},
        "online": online,
        "coverage": sums.get("avrec_catalogue_coverage_ratio"),
        "cold_start_share": sums.get("avrec_cold_start_lists_ratio"),
        "breakers": breakers,
        "events_in": sums.get("avrec_events_in_total", 0.0),
        "lists_out": sums.get("avrec_lists_out_total", 0.0),
        "dead_letters_by_stage": labelled(families, "avrec_dead_letters_total", "stage"),
    }


@app.page("/dashboard/summary")
async def dashboard_summary(web, request):
    return web.json(summary(list(REGISTRY.collect())))


# -- dead letters ----------------------------------------------------------------------------
def dead_letter_row(dlq_topic: str, partition: int, offset: int, value: bytes | None) -> dict[str, Any]:
    """One dead letter as the page shows it; a record that is not a dead letter says so."""
    row: dict[str, Any] = {"dlq_topic": dlq_topic, "dlq_partition": partition, "dlq_offset": offset}
    try:
        dl = decode_dead_letter(value or b"")
    except Exception as exc:  # noqa: BLE001 - any unreadable record is shown, not fatal
        return {**row, "stage": "unreadable", "error": f"not a dead-letter record: {exc}", "topic": None,
                "partition": None, "offset": None, "key": None, "failed_at": None, "original_preview": ""}
    key = dl.key_bytes()
    original = dl.original_bytes()
    return {
        **row, "stage": dl.stage, "error": dl.error, "topic": dl.topic, "partition": dl.partition,
        "offset": dl.offset, "key": None if key is None else key.decode("utf-8", "replace"),
        "failed_at": dl.failed_at, "original_size": dl.original_size,
        "original_preview": original[:PREVIEW_CHARS].decode("utf-8", "replace"),
    }


class DeadLetterReader:
    """The newest records of the dead-letter topics, read with one kafka-python consumer.

    No consumer group: it seeks each partition to ``end - limit`` and reads to the end, so
    it commits nothing and never disturbs the worker's own consumers. kafka-python blocks,
    so callers go through :meth:`newest_async` (a thread); a lock keeps the one consumer to
    one caller at a time, and answers are reused for ``cache_s`` (a page polls every few s).
    """

    def __init__(self, kafka: KafkaSettings, topics: list[str], cache_s: float = 2.0, read_s: float = 5.0):
        self.kafka, self.topics, self.cache_s, self.read_s = kafka, topics, cache_s, read_s
        self._consumer = None
        self._lock = threading.Lock()
        self._cached: tuple[float, int, list[dict[str, Any]]] | None = None

    def _client(self):
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(**self.kafka.kafka_python_config(), group_id=None,
                                           enable_auto_commit=False)
        return self._consumer

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """Blocking: up to ``limit`` dead letters, newest first, across the topics."""
        from kafka import TopicPartition

        with self._lock:
            consumer = self._client()
            consumer.topics()  # refreshes the metadata: DLQ topics created after start are seen
            tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            if not tps:
                return []
            consumer.assign(tps)
            ends, begins = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
            pending = {}
            for tp in tps:
                start = max(begins[tp], ends[tp] - limit)
                consumer.seek(tp, start)
                if ends[tp] > start:
                    pending[tp] = ends[tp]
            rows: list[dict[str, Any]] = []
            deadline = time.monotonic() + self.read_s
            while pending and time.monotonic() < deadline:
                for tp, recs in consumer.poll(timeout_ms=200).items():
                    rows += [dead_letter_row(tp.topic, tp.partition, r.offset, r.value)
                             for r in recs if r.offset < ends[tp]]
                for tp in list(pending):
                    if consumer.position(tp) >= pending[tp]:
                        del pending[tp]
            if pending:
                log.warning("dead letters: read timed out before the end of %s", sorted(map(str, pending)))
        rows.sort(key=lambda r: (r["failed_at"] or 0.0, r["dlq_offset"]), reverse=True)
        return rows[:limit]

    async def newest_async(self, limit: int) -> list[dict[str, Any]]:
        cached = self._cached
        if cached and time.monotonic() - cached[0] < self.cache_s and cached[1] >= limit:
            return cached[2][:limit]
        rows = await asyncio.to_thread(self.newest, limit)
        self._cached = (time.monotonic(), limit, rows)
        return rows

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def _dlq_topics() -> list[str]:
    t = _settings.kafka.topics
    return [t.uploads_dlq.name, t.interactions_dlq.name, t.control_dlq.name]


DEAD_LETTERS = DeadLetterReader(_settings.kafka, _dlq_topics())


def parse_limit(raw: str | None, most: int) -> int:
    """``?limit=`` as an int in [1, most]; a larger one is cut to ``most`` (the page's cap)."""
    if raw is None or raw == "":
        return most
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(f"limit must be a whole number from 1 to {most}, got {raw!r}") from None
    if limit < 1:
        raise ValueError(f"limit must be a whole number from 1 to {most}, got {limit}")
    return min(limit, most)


@app.page("/dashboard/dead-letters")
async def dashboard_dead_letters(web, request):
    most = _settings.web.dead_letters_shown
    try:
        limit = parse_limit(request.query.get("limit"), most)
    except ValueError as exc:
        return web.json({"error": str(exc)}, status=400)
    try:
        rows = await DEAD_LETTERS.newest_async(limit)
    except Exception as exc:  # noqa: BLE001 - Kafka down: the page says so and keeps polling
        log.warning("dead letters unavailable: %s", exc)
        return web.json({"error": f"cannot read the dead-letter topics from Kafka at "
                                  f"{_settings.kafka.bootstrap_servers}: {exc}"}, status=503)
    return web.json({"topics": DEAD_LETTERS.topics, "limit": limit, "dead_letters": rows})
