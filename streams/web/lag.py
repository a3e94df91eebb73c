"""Consumer lag per assigned partition, computed when ``/metrics`` is scraped.

lag = high-water mark - committed offset: the records a restart of this worker
would have to read again or for the first time. It is what Kafka's own tools and
KEDA's Kafka scaler report for the group, so the numbers agree; it trails
processing by at most ``worker.commit_interval_s`` (Faust commits what the agents
acked at that pace).

Everything is read from memory, with no request to the broker per scrape:

* the high-water mark: aiokafka's, from the partition's latest fetch response
  (``Consumer.highwater``; the last stable offset inside a transaction). A
  partition not fetched yet has none and is left out. A paused partition
  (Faust's flow control) is not fetched, so its mark can be a little stale.
* the committed offset: Faust's ``Consumer._committed_offset`` (the next offset
  to read, set from the broker at each rebalance's seek and at each commit).
  Before the partition's first commit (a new group, nothing processed yet), the
  consumer's fetch position stands in for it.

Only the partitions the agents read are reported: table changelogs (read by
standby replicas and recovery, which track their own offsets) are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from streams.web.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)


class PartitionLag(NamedTuple):
    topic: str
    partition: int
    lag: int


def partition_lags(assigned: Iterable[Any], highwater: Callable[[Any], int | None],
                   committed: Mapping[Any, int | None], position: Callable[[Any], int | None],
                   skip_topics: Iterable[str] = ()) -> list[PartitionLag]:
    """The lag of each assigned partition (objects with ``topic`` and ``partition``) that has a high-water mark
    and a committed offset or a position; sorted by topic and partition. Never negative: a mark older than
    the committed offset means caught up, not ahead."""
    skip = set(skip_topics)
    out = []
    for tp in assigned:
        if tp.topic in skip:
            continue
        hw = highwater(tp)
        if hw is None:
            continue
        at = committed.get(tp)
        if at is None:
            at = position(tp)
            if at is None:
                continue
        out.append(PartitionLag(tp.topic, tp.partition, max(0, hw - at)))
    out.sort()
    return out


def _fetch_position(aio_consumer: Any) -> Callable[[Any], int | None]:
    """aiokafka's fetch position of a partition, read from its subscription state (``AIOKafkaConsumer.position``
    is a coroutine that may wait for a reset; this never waits)."""

    def position(tp: Any) -> int | None:
        try:
            state = aio_consumer._subscription.subscription.assignment.state_value(tp)
        except AttributeError:  # not assigned (any more), or aiokafka's internals moved
            return None
        if state is None or not state.has_valid_position:
            return None
        return state.position

    return position


def app_lags(app: Any) -> list[PartitionLag]:
    """The lags of the Faust ``app``'s consumer (empty before the consumer started)."""
    consumer = app.consumer
    thread = getattr(consumer, "_thread", None)  # the aiokafka driver runs aiokafka in a thread of its own
    aio = getattr(thread, "_consumer", None)
    if aio is None:
        return []

    def highwater(tp: Any) -> int | None:
        try:
            return consumer.highwater(tp)
        except (AssertionError, AttributeError, KeyError):  # revoked between assignment() and here
            return None

    return partition_lags(consumer.assignment(), highwater, consumer._committed_offset, _fetch_position(aio),
                          skip_topics=app.tables.changelog_topics)


def refresh_consumer_lag(app: Any) -> None:
    """Refill ``avrec_consumer_lag`` for the partitions assigned now; revoked ones disappear.

    The gauge is cleared first, so a partition that moved to another worker is not reported
    twice (by its new owner and, frozen, by this one). A failure leaves the gauge empty for
    this scrape rather than failing the scrape.
    """
    CONSUMER_LAG.clear()
    try:
        lags = app_lags(app)
    except Exception:  # noqa: BLE001 - a scrape must not fail on the consumer's internals (e.g. mid-rebalance)
        log.debug("consumer lag not available for this scrape", exc_info=True)
        return
    for row in lags:
        CONSUMER_LAG.labels(topic=row.topic, partition=str(row.partition)).set(row.lag)
