"""The worker's in-memory views of its tables: write-through row cache and the takedown set."""

from __future__ import annotations

import time

import pytest

from streams.services.table_cache import CachedTable
from streams.services.takedowns import TakedownView


class CountingTable(dict):
    """A plain mapping that counts reads, standing in for the table store in these pure-logic tests."""

    reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_cached_table_reads_once_and_writes_through():
    table = CountingTable(a={"x": 1.0})
    cached = CachedTable(table, max_items=10, ttl_s=60)
    assert cached.get("a") == {"x": 1.0}
    assert cached["a"] == {"x": 1.0} and "a" in cached
    assert table.reads == 1  # later reads come from memory
    cached["a"] = {"x": 2.0}
    assert table["a"] == {"x": 2.0}  # the table (and its changelog) gets every write
    assert cached.get("a") == {"x": 2.0} and table.reads == 1  # own write visible without a re-read
    assert cached.get("missing") is None and "missing" not in cached
    with pytest.raises(KeyError):
        cached["missing"]
    del cached["a"]
    assert "a" not in table and cached.get("a") is None


def test_cached_table_rereads_after_ttl_and_evicts_least_recent():
    table = CountingTable(a=1, b=2, c=3)
    cached = CachedTable(table, max_items=2, ttl_s=0.05)
    cached.get("a")
    table["a"] = 10  # another worker's update arriving through the changelog
    assert cached.get("a") == 1  # within the TTL: the cached value
    time.sleep(0.06)
    assert cached.get("a") == 10  # after it: re-read
    cached.get("b"), cached.get("c")  # "a" is now least recent and evicted
    reads = table.reads
    cached.ttl_s = 60
    cached.get("a")
    assert table.reads == reads + 1
    assert len(cached) == 3 and set(cached) == {"a", "b", "c"}


def test_takedown_view_sees_local_takedowns_at_once_and_others_after_refresh():
    table = {"gone": {"reason": "x"}}
    view = TakedownView(table, refresh_s=60)
    assert "gone" in view and "other" not in view
    table["remote"] = {}  # written by another worker
    assert "remote" not in view.current()  # not re-read yet
    table["local"] = {}
    view.add(["local"])
    assert "local" in view  # this worker's own takedown applies immediately
    view.refresh_s = 0
    assert {"gone", "remote", "local"} <= view.current()
