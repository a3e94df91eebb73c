"""Registers every web view on the Faust app (imported by ``streams.web``)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.app import app
from streams.web.lag import refresh_consumer_lag
from streams.web.metrics import REGISTRY


@app.page("/metrics")
async def metrics(web, request):
    """Prometheus' text format, avrec's own registry only (docs/METRICS.md lists every series)."""
    # Lag is read from the consumer now (no broker request), so it is current at each scrape.
    refresh_consumer_lag(app)
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
