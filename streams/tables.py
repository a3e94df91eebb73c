"""Faust tables: the worker's durable state, in RocksDB with a Kafka changelog.

* ``user_state`` (partitioned like ``interactions``, keyed by user id): each
  user's taste vector, history, seen/hidden sets and the ids of recently
  applied events. Keeping the dedupe window *inside* the user's own record makes
  "apply the event" and "remember it was applied" one changelog write, so a
  crash between the two cannot double-apply a re-delivered event.
* ``cooccurrence`` and ``item-popularity`` (global, keyed by item id): item ->
  {neighbour: count}, and item -> positive interactions, for item-to-item candidates.
* ``takedowns`` (global, keyed by item id): items that must never be shown again.
* ``trending`` (global): periodic snapshots of the decayed popularity counter.

Deleting a key writes a tombstone to the changelog (forget-me).
"""

from __future__ import annotations

import faust

from streams.app import app
from streams.settings import get_settings

_partitions = get_settings().kafka.topics.interactions.partitions
# Keys are user or item ids, values JSON-safe dicts (UserState.to_dict() etc.).
_json = faust.Schema(key_serializer="json", value_serializer="json")

user_state = app.Table("user-state", default=None, partitions=_partitions, schema=_json)

def _global(name: str):
    # Global tables are written from agents on any topic: the producer's partitioner
    # picks the changelog partition, not the source event's partition.
    return app.GlobalTable(name, default=None, partitions=1, use_partitioner=True, schema=_json)


cooccurrence = _global("cooccurrence")
item_popularity = _global("item-popularity")
takedowns = _global("takedowns")
trending = _global("trending")
