"""Run table reads and writes in the scope of one particular event.

Faust picks a table's RocksDB partition and changelog partition from the event
currently being processed. When an agent handles a batch (``take_events``)
that mixes partitions, each user's state must be read and written in the scope
of that user's own event, or it would land in another partition's store.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust.streams import _current_event  # the ContextVar behind faust.current_event()


@contextmanager
def event_scope(event) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
