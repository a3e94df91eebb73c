"""Retrying transient failures of Triton and Milvus without ever skipping an event.

Two kinds of failure reach :func:`until_done`:

* **outages**: Triton unreachable or its circuit open, Milvus refusing
  connections or timing out, sockets reset. These are retried for as long as
  they last, with capped exponential back-off: the agent holds its batch, Faust
  commits no offset past it, and the stream resumes where it stopped.
* **errors that say "not this request"**: Milvus answering with an error code
  (collection missing, data that does not fit the schema, ...). Retrying those
  forever would stall the stream for good, so they get a few quick attempts
  (a server that has just restarted may answer oddly for a moment) and then
  propagate; the agent's safety net (``streams.agents.guarded``) dead-letters
  the batch at stage ``internal``, where it can be re-driven.
"""

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

# Errors that always mean "the service could not be reached or did not answer in time".
OUTAGE = (TritonUnavailable, ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)
# Kept for callers that catch "anything until_done may retry".
TRANSIENT = (*OUTAGE, VectorStoreError)
# Attempts for an error that is not an outage before it is raised.
PERMANENT_ATTEMPTS = 4

# gRPC status codes (by name, so grpc need not be imported here) meaning "not now".
_GRPC_OUTAGE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"})
# pymilvus wraps connection failures in MilvusException with these messages; its `code` is unreliable
# (pymilvus 2.5 stores grpc's bound `code` method there after exhausting its own retries).
_MILVUS_OUTAGE_TEXT = ("Retry timeout", "Fail connecting to server", "failed to connect to all addresses",
                       "server unavailable", "Deadline Exceeded", "Connection refused", "Socket closed")


def _grpc_code_name(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # noqa: BLE001 - not a grpc error after all
        return None
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def is_outage(exc: BaseException) -> bool:
    """Does ``exc`` say the service is down or unreachable (retry forever), not that the request is bad?"""
    if isinstance(exc, OUTAGE):
        return True
    if not isinstance(exc, VectorStoreError):
        return False
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if cur is not exc and isinstance(cur, OUTAGE):
            return True
        if _grpc_code_name(cur) in _GRPC_OUTAGE_CODES:
            return True
        text = str(getattr(cur, "message", "") or "") + " " + str(cur)
        if any(t in text for t in _MILVUS_OUTAGE_TEXT):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


async def until_done(what: str, op: Callable[[], Awaitable[T]], cfg: WorkerSettings) -> T:
    """Run ``op`` until it succeeds, backing off on outages; give up on other errors after a few tries.

    The agent does not return while this waits, so Faust does not ack (and never
    commits an offset past) the events being processed: an outage stalls the
    stream, it does not lose events.
    """
    delay = cfg.retry_initial_s
    failures = 0
    refusals = 0  # consecutive failures that were not outages
    while True:
        try:
            result = await op()
        except TRANSIENT as exc:
            failures += 1
            if is_outage(exc):
                refusals = 0
            else:
                refusals += 1
                if refusals >= PERMANENT_ATTEMPTS:
                    log.error("%s failed %d times with an error that is not an outage (%s: %s); giving up",
                              what, refusals, type(exc).__name__, exc)
                    raise
            level = logging.WARNING if failures in (1, 10) or failures % 50 == 0 else logging.DEBUG
            log.log(level, "%s failed (%s: %s); retry %d in %.1fs, events held", what,
                    type(exc).__name__, exc, failures, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.retry_max_s)
            continue
        if failures:
            log.warning("%s succeeded after %d retries", what, failures)
        return result
