"""Faust tables: the worker's durable state, in RocksDB with a Kafka changelog.

* ``user_state`` (partitioned like ``interactions``, keyed by user id): each
  user's taste vector, history, seen/hidden sets and the ids of recently
  applied events. Keeping the dedupe window *inside* the user's own record makes
  "apply the event" and "remember it was applied" one changelog write, so a
  crash between the two cannot double-apply a re-delivered event.
* ``item_owner`` (partitioned like ``item-commands``, keyed by item id): what
  an item's owner must remember: interactions parked until the item's upload
  lands, and whether the item was taken down.

Both are written only from the agent that owns the key's partition, in the
scope of an event of that partition (``event_scope``). The item-keyed ranking
state (co-occurrence, popularity, trending) is not a table: every worker holds
all of it, applied from a log (``streams/items/``).

Deleting a key writes a tombstone to the changelog.
"""

from __future__ import annotations

import faust

from streams.app import app
from streams.settings import get_settings

_s = get_settings()
# Keys are user or item ids, values JSON-safe dicts (UserState.to_dict() etc.).
_json = faust.Schema(key_serializer="json", value_serializer="json")

user_state = app.Table("user-state", default=None, partitions=_s.kafka.topics.interactions.partitions, schema=_json)
item_owner = app.Table("item-owner", default=None, partitions=_s.kafka.item_partitions, schema=_json)
