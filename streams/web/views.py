"""Registers every web view on the Faust app (imported by ``streams.web``)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.app import app
from streams.web.metrics import REGISTRY


@app.page("/metrics")
async def metrics(web, request):
    """Prometheus' text format, avrec's own registry only."""
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
