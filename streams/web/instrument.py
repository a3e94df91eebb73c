"""Connect a worker's context to its metrics, once, when the context is created.

``streams.services.context.get_context`` calls :func:`instrument_worker`; the
hot paths then update pre-bound metric children through hooks (see calls.py),
and the gauges that describe state (breaker, coverage, cold-start share) are
read when the registry is collected.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.web.calls import milvus_calls, triton_calls, watch_breaker
from streams.web.list_stats import CatalogueSize, list_metrics
from streams.web.metrics import MODEL

log = logging.getLogger(__name__)


def model_labels(ctx: Any) -> dict[str, str]:
    """``avrec_model_info``'s labels: the version lists are published as, and what it is made of."""
    s = ctx.settings
    ranker = ctx.active.ranker
    return {
        "model_version": ctx.active.model_version,
        "base_version": s.model_version,
        "fusion": s.ranking.fusion,
        # The fitted ranker's fingerprint, "none" when the weighted blend ranks (fusion not learned, or no file).
        "ranker": ranker.fingerprint() if ranker is not None else "none",
        "dim": str(s.encoders.dim),
    }


def set_model_info(ctx: Any) -> None:
    """At start and after every ranker hot reload (``ctx.on_model_change``)."""
    MODEL.info(model_labels(ctx))


def instrument_worker(ctx: Any) -> None:
    """Hook the context's Triton client, Milvus collections and item replica to the metrics."""
    ctx.triton.observe = triton_calls
    watch_breaker("triton", ctx.triton.breaker)
    # Milvus has no breaker of its own: its outages are retried by streams/services/retry.py.
    ctx.items.observe = milvus_calls
    ctx.users.observe = milvus_calls
    list_metrics(ctx.settings.web.recent_lists).count_catalogue_with(CatalogueSize(ctx.store))
    set_model_info(ctx)
    ctx.on_model_change = set_model_info
    log.debug("metrics wired: %s", model_labels(ctx))
