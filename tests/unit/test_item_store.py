"""The item-state log: ops, the deterministic store every worker runs, snapshots, and the item cache.

Pure code, no Kafka: records are encoded with ``streams/items/wire.py`` and fed
to :class:`ItemStore` by partition and offset, as the replica feeds them.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner as AioPartitioner

from streams.items import wire
from streams.items.partitioning import partition_for
from streams.items.store import ItemStore
from streams.ranking import RankingSettings, UserState, ingest_interaction, new_cooccurrence, new_trending
from streams.ranking.ingest import ingest_user
from streams.ranking.item_ops import ItemOp
from streams.ranking.recommend import ItemInfo
from streams.services.items import ItemCache

T0 = 1_700_000_000.0
TYPES = ("view", "like", "complete", "skip", "dislike", "share")
P_USERS, P_ITEMS = 4, 3


@pytest.fixture
def cfg() -> RankingSettings:
    # Small rows so that pruning (order-sensitive) happens often in these logs.
    return RankingSettings(cooc_max_neighbors=8, cooc_window=6)


def make_events(n: int, seed: int = 1) -> list[tuple[str, str, str, float]]:
    rng = random.Random(seed)
    users = [f"u{k}" for k in range(12)]
    items = [f"it{k}" for k in range(40)]
    return [(rng.choice(users), rng.choice(items[: rng.randint(5, 40)]), rng.choice(TYPES), T0 + k * 7.0)
            for k in range(n)]


class Log:
    """The user side of the pipeline: states per user, item ops shipped as item-deltas records."""

    def __init__(self, cfg: RankingSettings) -> None:
        self.cfg = cfg
        self.states: dict[str, UserState] = defaultdict(UserState)
        self.cooc_cfg = new_cooccurrence(cfg)  # window and half-life only: the user side reads no rows
        self.records: dict[int, list[bytes]] = defaultdict(list)  # item partition -> records in offset order
        self.offsets: dict[str, int] = defaultdict(int)  # user partition -> next offset

    def batch(self, events: list[tuple[str, str, str, float]], resend: list[wire.SourcedOp] | None = None
              ) -> list[wire.SourcedOp]:
        ops: list[wire.SourcedOp] = []
        for k, (user, item, etype, ts) in enumerate(events):
            src = f"i{partition_for(user.encode(), P_USERS)}"
            off = self.offsets[src]
            self.offsets[src] += 1
            out = ingest_user(self.states[user], f"{user}-{ts}", item, None, etype, None, ts, self.cfg, self.cooc_cfg)
            ops.extend(wire.SourcedOp(src, off, op) for op in out or [])
        self.ship(ops + (resend or []))
        return ops

    def ship(self, ops: list[wire.SourcedOp]) -> None:
        per: dict[int, list[wire.SourcedOp]] = defaultdict(list)
        for s in ops:
            per[partition_for(s.op.item.encode(), P_ITEMS)].append(s)
        for q, group in per.items():
            self.records[q].append(wire.encode_ops(group))

    def feed(self, store: ItemStore, start: dict[int, int] | None = None, stop: dict[int, int] | None = None,
             rng: random.Random | None = None) -> None:
        """Apply the records, partitions interleaved at random (as a replica's fetches interleave them)."""
        pos = {q: (start or {}).get(q, 0) for q in range(P_ITEMS)}
        end = {q: (stop or {}).get(q, len(self.records[q])) for q in range(P_ITEMS)}
        rng = rng or random.Random(0)
        while any(pos[q] < end[q] for q in pos):
            q = rng.choice([q for q in pos if pos[q] < end[q]])
            store.apply(q, pos[q], self.records[q][pos[q]])
            pos[q] += 1


def offline(cfg: RankingSettings, events) -> tuple:
    """The offline evaluation's path: ingest_interaction applied to dict stores at once."""
    cooc, trend = new_cooccurrence(cfg), new_trending(cfg)
    states: dict[str, UserState] = defaultdict(UserState)
    for user, item, etype, ts in events:
        ingest_interaction(states[user], f"{user}-{ts}", item, None, etype, None, ts, cfg, cooc, trend)
    return cooc, trend


def same_state(store: ItemStore, cooc, trend) -> None:
    assert store.cooc.counts == cooc.counts  # exact: the same float additions per row, in the same order
    assert store.cooc.pops == cooc.pops
    assert {i: store.trending.lg_of(i) for i in store.cooc.pops} == {i: trend.lg_of(i) for i in cooc.pops}
    assert sorted(store.trending._ids) == sorted(trend._ids)


def test_partition_for_is_kafkas_default_partitioner():
    parts = list(range(7))
    for key in (b"u42", b"ml:1", "ø-ü".encode(), b"x" * 200, b""):
        assert partition_for(key, 7) == AioPartitioner()(key, parts, parts)  # what Faust's producer sends to
    # The Java client's murmur2 test vector (org.apache.kafka.common.utils.UtilsTest): murmur2("21") = -973932308.
    assert partition_for(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)


def test_store_fed_from_the_log_equals_the_offline_state(cfg):
    events = make_events(600)
    log_ = Log(cfg)
    for start in range(0, len(events), 25):
        log_.batch(events[start : start + 25])
    store = ItemStore(cfg, P_ITEMS)
    log_.feed(store)
    cooc, trend = offline(cfg, events)
    assert max(len(r) for r in cooc.counts.values()) > cfg.cooc_max_neighbors  # rows were pruned
    same_state(store, cooc, trend)
    # Another interleaving of the partitions gives the same state: rows are per item, items per partition.
    other = ItemStore(cfg, P_ITEMS)
    log_.feed(other, rng=random.Random(99))
    assert other.cooc.counts == store.cooc.counts and other.cooc.pops == store.cooc.pops


def test_resent_ops_are_applied_once(cfg):
    """A worker killed after sending a batch's ops re-sends them from its committed offset: skipped by the marks."""
    events = make_events(300, seed=3)
    log_ = Log(cfg)
    sent: list[wire.SourcedOp] = []
    for start in range(0, len(events), 20):
        ops = log_.batch(events[start : start + 20], resend=sent[-40:])  # some of the previous batch, again
        sent.extend(ops)
    log_.ship(sent[:100])  # and a far re-send of the oldest
    store = ItemStore(cfg, P_ITEMS)
    log_.feed(store)
    same_state(store, *offline(cfg, events))
    assert store.ops_skipped >= 100


def test_a_snapshot_plus_the_log_after_it_equals_the_whole_log(cfg):
    events = make_events(800, seed=5)
    log_ = Log(cfg)
    for start in range(0, 400, 25):
        log_.batch(events[start : start + 25])
    running = ItemStore(cfg, P_ITEMS)
    log_.feed(running)
    # The owner of each partition writes the rows changed so far, a pos record, then the snap marker.
    snapshot: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for q in range(P_ITEMS):
        upto = running.position[q] - 1
        for item in running.changed_since_snapshot(q):
            snapshot[q].append((item.encode(), running.item_record(item)))
        snapshot[q].append((wire.POS_KEY, f'{{"upto": {upto}}}'.encode()))
        log_.records[q].append(wire.encode_snap(upto))
    for start in range(400, 600, 25):
        log_.batch(events[start : start + 25])
    log_.feed(running, start=dict(enumerate(running.position)))
    # A snapshot cut short by a crash: some rows written (ahead of the pos record), no pos, no marker.
    for q in range(P_ITEMS):
        for item in running.changed_since_snapshot(q)[::2]:
            snapshot[q].append((item.encode(), running.item_record(item)))
    for start in range(600, 800, 25):
        log_.batch(events[start : start + 25])
    log_.feed(running, start=dict(enumerate(running.position)))

    fresh = ItemStore(cfg, P_ITEMS)
    for q, recs in snapshot.items():
        for key, value in recs:
            fresh.load_record(q, key, value)
    fresh.finish_load(now=T0)
    assert all(fresh.position[q] > 0 for q in range(P_ITEMS))  # it starts after the snapshot, not at 0
    log_.feed(fresh, start=dict(enumerate(fresh.position)))
    cooc, trend = offline(cfg, events)
    same_state(running, cooc, trend)
    same_state(fresh, cooc, trend)
    assert fresh.marks == running.marks


def test_snap_marker_forgets_only_changes_up_to_it(cfg):
    store = ItemStore(cfg, 1)
    op = lambda off, item: wire.encode_ops([wire.SourcedOp("i0", off, ItemOp(item, pop=1.0))])  # noqa: E731
    store.apply(0, 0, op(0, "a"))
    store.apply(0, 1, op(1, "b"))
    store.apply(0, 2, wire.encode_snap(0))  # the owner wrote the rows changed up to offset 0
    store.apply(0, 3, op(2, "a"))
    assert store.changed_since_snapshot(0) == ["b", "a"]
    assert store.dirty[0] == {"b": 1, "a": 3}
    store.apply(0, 4, wire.encode_snap(3))
    assert store.changed_since_snapshot(0) == []


def test_uploads_and_takedowns_reach_fresh_window_cache_and_candidates(cfg):
    changes: list[tuple[str, str | None]] = []
    store = ItemStore(cfg, 1, on_change=lambda i, v: changes.append((i, v)))
    store.apply(0, 0, wire.encode_up("v1", "e1", T0, "c1"))
    store.apply(0, 1, wire.encode_ops([wire.SourcedOp("i0", 0, ItemOp("v1", pop=1.0, trend_ts=T0, trend_w=1.0,
                                                                     pairs=(("v2", 1.0),)))]))
    assert store.fresh.recent(T0 + 1, 5) == [("v1", T0)]
    assert store.meta["v1"].creator_id == "c1" and store.cooc.counts["v1"] == {"v2": 1.0}
    store.apply(0, 2, wire.encode_up("v1", "e2", T0 + 5, "c1"))  # re-upload: a new version
    store.apply(0, 3, wire.encode_down("v1"))
    assert changes == [("v1", "e1"), ("v1", "e2"), ("v1", None)]
    assert "v1" in store.down and "v1" not in store.cooc.counts and "v1" not in store.cooc.pops
    assert store.fresh.recent(T0 + 10, 5) == [] and "v1" not in store.trending
    # Nothing more is learned about a taken-down item, and it cannot be uploaded again.
    store.apply(0, 4, wire.encode_ops([wire.SourcedOp("i0", 1, ItemOp("v1", pop=1.0))]))
    store.apply(0, 5, wire.encode_up("v1", "e3", T0 + 20, "c1"))
    assert "v1" not in store.cooc.pops and store.fresh.recent(T0 + 30, 5) == [] and len(changes) == 3
    rec = store.item_record("v1")
    again = ItemStore(cfg, 1)
    again.load_record(0, b"v1", rec)
    assert "v1" in again.down


def test_unknown_record_kinds_are_refused(cfg):
    store = ItemStore(cfg, 1)
    with pytest.raises(Exception, match="unknown item-deltas record kind"):
        store.apply(0, 0, b'{"k": "nope"}')
    with pytest.raises(Exception, match="not an item-state record"):
        store.apply(0, 0, b"[1, 2]")
    assert store.position == [0]


class _Rows:
    """Milvus ``items`` rows for the cache tests: get() answers from a dict, optionally after a pause."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.calls = 0
        self.pause = None

    def get(self, ids):
        self.calls += 1
        found = {i: self.rows[i] for i in ids if i in self.rows}  # read now, answered after the pause
        if self.pause is not None:
            self.pause.wait(5)
        return found


def _row(item: str, v: float) -> dict:
    vec = np.zeros(4, np.float32)
    vec[0] = v
    return {"item_id": item, "vector": vec, "created_at": 1000, "available": True, "modalities": "text"}


async def test_item_cache_drops_an_item_on_a_new_upload_version_only():
    rows = _Rows()
    rows.rows["a"] = _row("a", 1.0)
    cache = ItemCache(rows, 10)
    assert (await cache.get_many(["a"]))["a"].vector[0] == 1.0
    await cache.get_many(["a"])
    assert rows.calls == 1  # cached
    cache.put(ItemInfo("b", "c", "t", np.ones(4, np.float32), 0.0), version="e-b")
    cache.invalidate("b", "e-b")  # this worker's own upload coming back through the log: kept
    await cache.get_many(["b"])
    assert rows.calls == 1
    rows.rows["a"] = _row("a", 2.0)  # re-uploaded elsewhere with a new vector
    cache.invalidate("a", "e-a2")
    assert (await cache.get_many(["a"]))["a"].vector[0] == 2.0 and rows.calls == 2


async def test_item_cache_does_not_keep_a_row_fetched_before_an_invalidation():
    import threading

    rows = _Rows()
    rows.rows["a"] = _row("a", 1.0)
    cache = ItemCache(rows, 10)
    rows.pause = threading.Event()
    fetch = asyncio.ensure_future(cache.get_many(["a"]))
    await asyncio.sleep(0.05)  # the Milvus read is in flight (old row) ...
    cache.invalidate("a", "e-a2")  # ... when the re-upload's record is applied
    rows.rows["a"] = _row("a", 2.0)
    rows.pause.set()
    assert (await fetch)["a"].vector[0] == 1.0  # that read answers with what it got
    rows.pause = None
    assert (await cache.get_many(["a"]))["a"].vector[0] == 2.0  # but did not cache it


async def test_item_cache_near_its_bound_evicts_the_least_recently_read():
    rows = _Rows()
    for i in "abcde":
        rows.rows[i] = _row(i, 1.0)
    cache = ItemCache(rows, 4)
    await cache.get_many(["a", "b", "c", "d"])  # full
    await cache.get_many(["a"])  # read again: now the most recent
    got = await cache.get_many(["e"])  # one more: the least recently read (b) goes, not a
    assert got["e"].row >= 0
    assert set(cache._items) == {"a", "c", "d", "e"}
    np.testing.assert_array_equal(cache.vectors_of(["a", "e"])[:, 0], [1.0, 1.0])
