"""Retrying transient failures of Triton and Milvus without ever skipping an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from encoders.exceptions import TritonUnavailable
from streams.exceptions import VectorStoreError
from streams.settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (TritonUnavailable, VectorStoreError, ConnectionError, TimeoutError, OSError)


async def until_done(what: str, op: Callable[[], Awaitable[T]], cfg: WorkerSettings) -> T:
    """Run ``op`` until it succeeds, backing off on transient errors.

    The agent does not return while this waits, so Faust does not ack (and never
    commits an offset past) the events being processed: an outage stalls the
    stream, it does not lose events.
    """
    delay = cfg.retry_initial_s
    failures = 0
    while True:
        try:
            result = await op()
        except TRANSIENT as exc:
            failures += 1
            level = logging.WARNING if failures in (1, 10) or failures % 50 == 0 else logging.DEBUG
            log.log(level, "%s failed (%s: %s); retry %d in %.1fs, events held", what,
                    type(exc).__name__, exc, failures, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.retry_max_s)
            continue
        if failures:
            log.warning("%s succeeded after %d retries", what, failures)
        return result
