"""Connecting to Milvus the same way everywhere: Milvus Lite's server or Milvus standalone by URI.

Every streaming call made through the client returned here (upsert, get,
search, query, delete, ...) carries a deadline (``settings.timeout_s``). Without one, pymilvus retries a refused connection 75
times with back-off (measured: ~210 s for one ``upsert`` while Milvus was
down), and only honours a per-call ``timeout`` that is an ``int``; so a float
setting is rounded up. A call that runs out of time raises ``MilvusException``
(``VectorStoreError`` once wrapped by :mod:`streams.vectors.collections`), and
the worker's :func:`streams.services.retry.until_done` backs off and retries:
an outage holds the stream instead of freezing a thread for minutes. The gRPC
channel reconnects by itself when the server comes back.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from streams.exceptions import VectorStoreError
from streams.settings import MilvusSettings

log = logging.getLogger(__name__)


# Calls whose duration grows with the data (loading a large collection, building an index) keep
# pymilvus' own behaviour: a fixed deadline would fail a worker start-up on a big collection
# (iterators: a deadline per page is not what a caller of a long scan expects).
_UNBOUNDED = frozenset({"load_collection", "load_partitions", "refresh_load", "create_collection", "create_index",
                        "flush", "compact", "wait_for_loading", "query_iterator", "search_iterator"})


def _timeout_positions() -> dict[str, int]:
    """Public ``MilvusClient`` methods that take ``timeout``, with its positional index (self excluded)."""
    out: dict[str, int] = {}
    for name, fn in inspect.getmembers(MilvusClient, inspect.isfunction):
        if name.startswith("_") or name in _UNBOUNDED:
            continue
        params = list(inspect.signature(fn).parameters.values())[1:]
        for i, p in enumerate(params):
            if p.name == "timeout":
                out[name] = i if p.kind is p.POSITIONAL_OR_KEYWORD else -1
                break
    return out


_TIMED = _timeout_positions()


class DeadlineMilvusClient(MilvusClient):
    """A ``MilvusClient`` whose public calls default to ``timeout=call_timeout`` (whole seconds)."""

    def __init__(self, *args: Any, call_timeout: float, **kwargs: Any) -> None:
        # pymilvus ignores a float per-call timeout when deciding when to stop retrying.
        self._avrec_call_timeout = max(1, math.ceil(call_timeout))
        super().__init__(*args, **kwargs)

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        pos = _TIMED.get(name)
        if pos is None or not callable(attr):
            return attr
        default = super().__getattribute__("_avrec_call_timeout")

        @functools.wraps(attr)
        def with_deadline(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None and not (0 <= pos < len(args)):
                kwargs["timeout"] = default
            return attr(*args, **kwargs)

        return with_deadline


def milvus_client(settings: MilvusSettings) -> MilvusClient:
    """A ``MilvusClient`` for ``settings.uri`` with per-call deadlines; the token (if any) is never logged."""
    token = settings.token.get_secret_value() if settings.token else ""
    try:
        client = DeadlineMilvusClient(
            uri=settings.uri, token=token, db_name=settings.db_name, timeout=settings.timeout_s,
            call_timeout=settings.timeout_s,
        )
    except MilvusException as exc:
        raise VectorStoreError(
            f"cannot connect to Milvus at {settings.uri}: {exc.message}. Is the stack up (`avrec stack status`)? "
            "For Milvus standalone set AVREC_MILVUS__URI and AVREC_MILVUS__TOKEN."
        ) from exc
    log.debug("connected to Milvus at %s", settings.uri)
    return client
