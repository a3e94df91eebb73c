"""The Kafka topics the worker reads and writes, declared on the Faust app.

Keys and values are raw bytes: decoding is ours (streams/records.py), so a
malformed payload reaches the agent and can be dead-lettered instead of
crashing the consumer inside a codec.
"""

from __future__ import annotations

from streams.app import app
from streams.settings import get_settings

_t = get_settings().kafka.topics


def _topic(spec, **kw):
    return app.topic(spec.name, key_type=bytes, value_type=bytes, partitions=spec.partitions,
                     retention=spec.retention_ms / 1000 if spec.retention_ms > 0 else None, **kw)


uploads = _topic(_t.uploads)
interactions = _topic(_t.interactions)
control = _topic(_t.control)
recommendations = _topic(_t.recommendations, compacting=True, deleting=True)
uploads_dlq = _topic(_t.uploads_dlq)
interactions_dlq = _topic(_t.interactions_dlq)
control_dlq = _topic(_t.control_dlq)
# Internal: per-user commands (fan-out refresh, forget-me), keyed by user and
# co-partitioned with interactions, so the agent owning the user's state table
# partition serves them (a table may only be changed from its own partition).
user_commands = app.topic(f"{get_settings().app_id}-user-commands", key_type=bytes, value_type=bytes,
                          partitions=_t.interactions.partitions, internal=True)
