"""The Kafka topics the worker reads and writes, declared on the Faust app.

Keys and values are raw bytes: decoding is ours (streams/records.py), so a
malformed payload reaches the agent and can be dead-lettered instead of
crashing the consumer inside a codec.

avrec's own topics (``Settings.internal_topics``) are created by the worker at
start, before Faust joins the group, with the partitions the keys are hashed
over (``streams/items/partitioning.py``):

* ``impressions`` (an input topic, like ``interactions``): the lists users were
  shown, keyed by user and co-partitioned with ``interactions`` (the worker
  refuses to start otherwise), so the user agent attributes a user's
  interactions to their impressions in the order they were produced.
* ``user_commands``: per-user commands (new-content refresh, forget-me, a
  parked interaction released), keyed by user and co-partitioned with
  ``interactions``. The user agent reads both topics as one stream, so a
  user's commands and events are never handled at the same time.
* ``item_deltas`` / ``item_commands`` / ``item_state``: the item-keyed state
  (``streams/items/``): the log every worker's replica applies, the owners'
  commands, and the owners' snapshots.
"""

from __future__ import annotations

from streams.app import app
from streams.settings import get_settings

_s = get_settings()
_t = _s.kafka.topics
_internal = {spec.name.removeprefix(f"{_s.app_id}-"): spec for spec in _s.internal_topics()}


def _topic(spec, **kw):
    return app.topic(spec.name, key_type=bytes, value_type=bytes, partitions=spec.partitions,
                     retention=spec.retention_ms / 1000 if spec.retention_ms > 0 else None, **kw)


uploads = _topic(_t.uploads)
interactions = _topic(_t.interactions)
control = _topic(_t.control)
recommendations = _topic(_t.recommendations, compacting=True, deleting=True)
impressions = _topic(_t.impressions)
uploads_dlq = _topic(_t.uploads_dlq)
interactions_dlq = _topic(_t.interactions_dlq)
control_dlq = _topic(_t.control_dlq)

user_commands = _topic(_internal["user-commands"])
item_deltas = _topic(_internal["item-deltas"])
item_commands = _topic(_internal["item-commands"])
item_state = _topic(_internal["item-state"])
# The user agent's input: a user's events, impressions and commands, one stream (same partitions, same
# worker: Faust's assignor gives a worker the same partition numbers of co-subscribed topics of one count).
user_stream = app.topic(_t.interactions.name, _t.impressions.name, _internal["user-commands"].name,
                        key_type=bytes, value_type=bytes)
