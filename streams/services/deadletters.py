"""Dead-lettering: the original bytes, the error and the stage go to ``<topic>.dlq``."""

from __future__ import annotations

import logging

from streams import topics
from streams.records import dead_letter, encode
from streams.web.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)

_DLQ = {
    topics.uploads.get_topic_name(): topics.uploads_dlq,
    topics.interactions.get_topic_name(): topics.interactions_dlq,
    topics.control.get_topic_name(): topics.control_dlq,
}


async def send_dead_letter(event, stage: str, error: Exception | str) -> None:
    """Publish the event's original record to its dead-letter topic; the agent keeps going."""
    msg = event.message
    await send_dead_record(msg.value, msg.key, msg.topic, msg.partition, msg.offset, stage, error)


async def send_dead_record(value: bytes, key: bytes | None, topic: str, partition: int, offset: int, stage: str,
                           error: Exception | str) -> None:
    """A record read earlier from ``topic[partition]@offset`` (kept since, e.g. parked) to its dead-letter topic."""
    record = dead_letter(value, key, error, stage, topic, partition, offset)
    target = _DLQ.get(topic, topics.interactions_dlq)
    log.warning("dead-letter %s[%d]@%d stage=%s: %s", topic, partition, offset, stage, error)
    await target.send(key=key, value=encode(record))
    DEAD_LETTERS.labels(topic=target.get_topic_name(), stage=stage).inc()
