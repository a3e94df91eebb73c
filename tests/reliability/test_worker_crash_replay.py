"""Replay 20k interactions through 3 workers in one group, ``kill -9`` one of them at a time, restart it.

Three real workers (real Kafka, Milvus Lite, RocksDB state per replica,
changelogs, the item-state log) share one app id; ``interactions`` and the item
topics have 6 partitions, so each worker owns two of each and a kill moves two
users' and two items' partitions. Set-up:

* a synthetic catalogue of ``N_ITEMS`` items (random unit 384-d vectors, known
  durations) written straight into the workers' Milvus ``items`` collection;
* ``N_EVENTS`` distinct interactions for ``N_USERS`` users (all event types,
  watch times, ~5% late events), plus ``N_DUPLICATES`` re-sends of earlier events
  under the same ``event_id`` (some inside the same batch, some far behind, and
  for a few users the very last record), all produced up front.

Worker k is killed with SIGKILL (its whole process group) once the group's
committed offsets pass 25%, 50% and 75% of the records (k = 0, 1, 2), at the
moment a list for one of that kill point's short-lived users' final event
appears (so the kill lands right after a batch that holds some user's last
event; after 60 s without one, it is killed anyway), and restarted on the same
group and data directory. Snapshots of the item state are written every 5 s,
so kills also land in the middle of them. Then, once every record is committed:

* offline recomputation: the ``interactions`` topic is read back and each user's
  state rebuilt with the pure core (``ingest_interaction``), every ``event_id``
  applied once; the latest ``<app_id>-user-state-changelog`` record per user must
  hold exactly the same applied event ids (nothing lost), ``n_events`` equal to
  their number (nothing applied twice), the same taste vector (float tolerance),
  clock, seen/hidden sets and history;
* the item state, read two ways: a replica bootstrapped as a new worker would
  (the owners' snapshots, then the log after them), and the whole item-deltas
  log applied from its first record. Both must hold exactly the recomputed
  co-occurrence counts and popularity of every item (rows are not pruned here,
  ``COOC_MAX_NEIGHBORS``, so counts do not depend on the order rows got their
  ops in) and the trending scores (float tolerance);
* the user vectors mirrored in Milvus ``users`` equal the recomputed ones;
* the last list on ``recommendations`` for each user is tagged with that user's
  last *applied* event (not a dropped duplicate) and shows nothing they have seen
  or hidden.

Figures (events, kills, re-delivered events, runtime) are printed (``-s``).

This test found a worker bug, fixed in streams/services/interactions.py: after
a kill the user-state changelog missed events that the worker's RocksDB held (a
re-delivered duplicate wrote nothing). Should it come back, the failure names
the events with their (partition, offset) and the committed offsets at each kill.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.items.replica import ItemReplica
from streams.items.store import ItemStore
from streams.ranking import UserState, ingest_interaction, new_cooccurrence, new_trending, user_vector
from streams.records import decode_interaction, decode_recommendation, watch_ratio
from streams.vectors.collections import ItemCollection
from streams.vectors.milvus import milvus_client
from tests.workerproc import WorkerProcess, worker_env

pytestmark = pytest.mark.stack

SEED = 20240606
N_ITEMS = 1000
N_USERS = 60  # active throughout the replay
FINISHERS = 40  # short-lived users per kill point (see make_records)
FINISHER_EVENTS = 12
FINISH_SPREAD = 3000  # records over which one kill point's finishers make their last events
N_EVENTS = 20_000  # distinct interactions
N_DUPLICATES = 400  # re-sent events (same event_id, same content)
PARTITIONS = 6  # interactions and the item topics
N_WORKERS = 3
PRODUCE_RATE = 150.0  # records/s: ~136 s of producing
COOC_MAX_NEIGHBORS = 5000  # > items: no row is ever pruned
KILL_AT = (0.25, 0.50, 0.75)  # fractions of all records committed
DIM = 384
DURATIONS = (10.0, 20.0, 30.0, 60.0)  # exact in float32, as Milvus stores them
TYPES = ("view", "like", "share", "comment", "complete", "skip", "dislike", "hide")
TYPE_P = (0.30, 0.22, 0.06, 0.06, 0.20, 0.08, 0.05, 0.03)
BUDGET_S = 720.0  # replay + kills, leaving the checks room under the test's 900 s (a slow worker fails with our message)
WORKER_ENV = {
    "AVREC_KAFKA__TOPICS__INTERACTIONS__PARTITIONS": str(PARTITIONS),
    "AVREC_KAFKA__ITEM_PARTITIONS": str(PARTITIONS),
    "AVREC_RANKING__COOC_MAX_NEIGHBORS": str(COOC_MAX_NEIGHBORS),
    "AVREC_WORKER__ITEM_SNAPSHOT_EVERY_S": "5",
    "AVREC_WORKER__ITEM_TICK_S": "1",
    # With a backlog, wait a little for full batches: one batched ANN search and one list per user per
    # batch instead of per handful of events (the default 10 ms gave ~10-event batches on 2 cores).
    "AVREC_WORKER__INTERACTION_BATCH_WITHIN_S": "0.25",
}
NOW = time.time()


# -- data ---------------------------------------------------------------------------
def make_catalogue(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    vecs = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"ci{i}" for i in range(N_ITEMS)]
    return dict(zip(ids, vecs)), {iid: DURATIONS[i % len(DURATIONS)] for i, iid in enumerate(ids)}


def load_catalogue(settings, vectors: dict[str, np.ndarray], durations: dict[str, float]) -> None:
    client = milvus_client(settings.milvus)
    try:
        items = ItemCollection(client, settings.milvus.items_collection, DIM)
        items.ensure()
        zeros = [0.0] * DIM
        created = int((NOW - 30 * 86400) * 1000)
        items.upsert([{"item_id": iid, "vector": v.tolist(), "text_vec": v.tolist(), "audio_vec": zeros,
                       "video_vec": zeros, "creator_id": f"cr{k % 50}", "title": f"item {k}", "tags": "",
                       "created_at": created, "available": True, "modalities": "text",
                       "duration_s": durations[iid]} for k, (iid, v) in enumerate(vectors.items())])
        got = items.get(list(vectors))
        assert len(got) == len(vectors), f"catalogue: {len(got)} of {len(vectors)} items readable from Milvus"
    finally:
        client.close()


def make_records(rng: random.Random, item_ids: list[str]) -> tuple[list[dict], int]:
    """All records in send order: distinct events with duplicates mixed in; returns (records, duplicates).

    Besides ``N_USERS`` users active throughout, ``FINISHERS`` short-lived users per kill point
    make their last interaction just after that point (one every ~``FINISH_SPREAD // FINISHERS``
    records), so whichever batch a kill interrupts holds some user's *final* event: a crash
    there is not papered over by a later event of the same user.
    """
    users = [f"ru{u:03d}" for u in range(N_USERS)]
    clock = {u: NOW - 20 * 86400 + rng.uniform(0, 3600) for u in users}

    def event(u: str, eid: str) -> dict:
        clock[u] += rng.uniform(1, 120)
        ts = clock[u] - rng.uniform(60, 6 * 3600) if rng.random() < 0.05 else clock[u]  # ~5% late events
        etype = rng.choices(TYPES, TYPE_P)[0]
        ev = {"event_id": eid, "user_id": u, "item_id": rng.choice(item_ids), "type": etype, "ts": ts}
        if etype in ("view", "complete", "skip") and rng.random() < 0.9:
            ev["watch_ms"] = rng.randrange(0, 90_000)
        return ev

    n_finisher_events = len(KILL_AT) * FINISHERS * FINISHER_EVENTS
    slots: dict[int, list[dict]] = defaultdict(list)  # position in the regular stream -> events before it
    n_regular = N_EVENTS - n_finisher_events
    for k, frac in enumerate(KILL_AT):
        for j in range(FINISHERS):
            u = f"rf{k}-{j:02d}"
            clock[u] = NOW - 10 * 86400 + rng.uniform(0, 3600)
            last = int(frac * n_regular) + j * FINISH_SPREAD // FINISHERS
            at = sorted(rng.sample(range(last - FINISH_SPREAD, last), FINISHER_EVENTS - 1)) + [last]
            for n, pos in enumerate(at):
                slots[pos].append(event(u, f"{u}-{n}"))
    events: list[dict] = []
    for k in range(n_regular):
        events.extend(slots.pop(k, []))
        u = rng.choice(users)
        events.append(event(u, f"{u}-{k}"))
    assert not slots and len(events) == N_EVENTS
    # Re-sends: each goes a little (same batch) or far (another batch) after its original.
    # A user's dedupe window (512 ids) covers far more than one user's events here.
    inserts: dict[int, list[dict]] = defaultdict(list)
    for i in rng.sample(range(N_EVENTS - 200), N_DUPLICATES - 10):
        inserts[min(N_EVENTS - 1, i + rng.choice((1, 5, 50, 2000, 8000)))].append(events[i])
    records: list[dict] = []
    for k, ev in enumerate(events):
        records.append(ev)
        records.extend(inserts.get(k, []))
    # For 10 users the very last record is a re-send: their list must still name their last *applied* event.
    for u in rng.sample(users, 10):
        own = [e for e in events if e["user_id"] == u]
        records.append(rng.choice(own[-20:-1]))
    return records, len(records) - N_EVENTS


# -- Kafka readers ----------------------------------------------------------------------
class TopicTail:
    """Reads a whole topic from the beginning and, on each ``catch_up()``, up to its current end."""

    def __init__(self, settings, topic: str, on_record: Callable) -> None:
        self.consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), enable_auto_commit=False,
                                      max_partition_fetch_bytes=8 * 1024 * 1024)
        self.topic, self.on_record = topic, on_record
        self.tps: list[TopicPartition] = []
        self.records = 0

    def _assign(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.tps:
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                self.tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                self.consumer.assign(self.tps)
                self.consumer.seek_to_beginning(*self.tps)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} not found in {timeout}s")
            self.consumer.topics()  # refresh metadata
            time.sleep(0.5)

    def catch_up(self, timeout: float = 60.0) -> None:
        self._assign(timeout)
        end = self.consumer.end_offsets(self.tps)
        deadline = time.monotonic() + timeout
        while any(self.consumer.position(tp) < end[tp] for tp in self.tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: not read to {end} in {timeout}s")
            for tp, recs in self.consumer.poll(timeout_ms=500, max_records=5000).items():
                for r in recs:
                    self.records += 1
                    self.on_record(r)

    def close(self) -> None:
        self.consumer.close()

    @classmethod
    def read_all(cls, settings, topic: str) -> list:
        got: list = []
        tail = cls(settings, topic, got.append)
        try:
            tail.catch_up()
        finally:
            tail.close()
        return got


class ListWatcher(threading.Thread):
    """Follows ``recommendations`` as the worker publishes: which source events have a list, and when."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(settings.kafka.topics.recommendations.name,
                                      **settings.kafka.kafka_python_config(), auto_offset_reset="earliest",
                                      enable_auto_commit=False)
        self.arrived: dict[str, float] = {}  # source_event_id -> first seen (monotonic)
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            for recs in self.consumer.poll(timeout_ms=100).values():
                now = time.monotonic()
                for r in recs:
                    if r.value is not None:
                        self.arrived.setdefault(orjson.loads(r.value)["source_event_id"], now)
        self.consumer.close()

    def wait_any(self, event_ids: set[str], since: float, timeout: float) -> str | None:
        """The first of ``event_ids`` whose list arrives after ``since``; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for eid in event_ids:
                if self.arrived.get(eid, 0.0) > since:
                    return eid
            time.sleep(0.02)
        return None


def committed_offsets(settings, group: str, topic: str) -> dict[int, int]:
    probe = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        return {p: probe.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)}
    finally:
        probe.close()


def wait_committed(workers: list[WorkerProcess], target: int, timeout: float) -> dict[int, int]:
    s = workers[0].settings
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        offs = committed_offsets(s, s.app_id, s.kafka.topics.interactions.name)
        done = sum(offs.values())
        if done >= target:
            return offs
        for k, w in enumerate(workers):
            if not w.alive():
                raise AssertionError(f"worker {k} died at {done}/{target} committed:\n{w.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers committed {done} of the {target} records wanted in {timeout:.0f}s "
                                 f"(was {last} one poll earlier):\n" + "\n".join(w.tail(20) for w in workers))
        last = done
        time.sleep(0.5)


def item_state_from_snapshots(settings) -> ItemStore:
    """The item state a new worker starts from: the owners' snapshots, then the log after them."""

    async def read() -> ItemStore:
        store = ItemStore(settings.ranking, settings.kafka.item_partitions)
        replica = ItemReplica(settings, store)
        await replica.start()
        await replica.stop()
        return store

    return asyncio.run(read())


def item_state_from_the_whole_log(settings) -> ItemStore:
    store = ItemStore(settings.ranking, settings.kafka.item_partitions)
    tail = TopicTail(settings, f"{settings.app_id}-item-deltas",
                     lambda r: store.apply(r.partition, r.offset, r.value))
    try:
        tail.catch_up()
    finally:
        tail.close()
    return store


def item_state_differences(store: ItemStore, cooc, trending) -> list[str]:
    """What differs between a worker-side item state and the offline recomputation (empty: nothing)."""
    out = []
    for item in sorted(set(cooc.pops) | set(store.cooc.pops)):
        got, want = store.cooc.pops.get(item), cooc.pops.get(item)
        if got != want:
            out.append(f"popularity of {item}: {got} != {want} (recomputed)")
    for item in sorted(set(cooc.counts) | set(store.cooc.counts)):
        got, want = store.cooc.counts.get(item, {}), cooc.counts.get(item, {})
        if got != want:
            diff = {j: (got.get(j), want.get(j)) for j in set(got) | set(want) if got.get(j) != want.get(j)}
            out.append(f"co-occurrence row {item}: (got, recomputed) {dict(list(diff.items())[:5])}")
    for item in sorted(set(trending._index) | set(store.trending._index)):
        got, want = store.trending.lg_of(item), trending.lg_of(item)
        if got is None or want is None or abs(got - want) > 1e-9 * max(1.0, abs(want)):
            out.append(f"trending of {item}: {got} != {want} (recomputed)")
    return out


def local_store_ahead(settings, changelog: dict[str, dict | None]) -> dict[str, list[str]]:
    """Diagnostics only (Faust's on-disk layout): users whose RocksDB state holds events the changelog lacks.

    Read with the worker dead, right after a kill. Returns user -> event ids missing from the changelog.
    """
    from rocksdict import AccessType, Options, Rdict

    ahead: dict[str, list[str]] = {}
    root = settings.faust_datadir / "v1" / "tables"
    for path in sorted(root.glob("user-state-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for k, v in db.items():
                if k.startswith(b"__faust"):
                    continue
                user, local = orjson.loads(k), orjson.loads(v)
                logged = set((changelog.get(user) or {}).get("recent_event_ids", []))
                if missing := [e for e in local["recent_event_ids"] if e not in logged]:
                    ahead[user] = missing
        finally:
            db.close()
    return ahead


class ChangelogBehindLocalState(AssertionError):
    """Applied events missing from the changelog (and that user's stale list / Milvus vector)."""


# -- the test -------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_kill9_one_of_three_workers_during_20k_replay_loses_nothing_and_applies_nothing_twice(stack, tmp_path):
    t_start = time.monotonic()
    unique = "replay" + uuid.uuid4().hex[:8]
    workers = [WorkerProcess(worker_env(unique, {**WORKER_ENV, "AVREC_WORKER__REPLICA": str(k)}),
                             tmp_path / f"worker{k}.log") for k in range(N_WORKERS)]
    s = workers[0].settings
    assert s.kafka.topics.interactions.partitions == PARTITIONS == s.kafka.item_partitions
    prng, nrng = random.Random(SEED), np.random.default_rng(SEED)
    item_vecs, durations = make_catalogue(nrng)
    records, n_dup = make_records(prng, list(item_vecs))
    total = len(records)
    tails: list[TopicTail] = []
    watcher: ListWatcher | None = None
    try:
        load_catalogue(s, item_vecs, durations)
        for w in workers:
            w.start()
        t0 = time.monotonic()
        # Produced at a pace the three workers keep up with but cannot finish early, so that every
        # kill lands mid-replay (with the log produced up front they drained it before the second).
        producer = threading.Thread(target=workers[0].produce, args=("interactions", records),
                                    kwargs={"rate": PRODUCE_RATE}, daemon=True)
        producer.start()

        # Where each event landed (partition, offset): read the topic back, as the offline recomputation will.
        log: dict[int, list] = defaultdict(list)  # partition -> records in offset order
        where: dict[str, tuple[int, int]] = {}

        def on_interaction(r) -> None:
            log[r.partition].append(r)
            where.setdefault(orjson.loads(r.value)["event_id"], (r.partition, r.offset))

        itail = TopicTail(s, s.kafka.topics.interactions.name, on_interaction)
        tails.append(itail)

        # Changelog: latest state per user, followed incrementally across kills.
        changelog: dict[str, dict | None] = {}
        ctail = TopicTail(s, f"{s.app_id}-user-state-changelog",
                          lambda r: changelog.__setitem__(orjson.loads(r.key),
                                                          orjson.loads(r.value) if r.value else None))
        tails.append(ctail)

        # Each kill point's short-lived users (see make_records), and their final events.
        finals = [{f"rf{k}-{j:02d}-{FINISHER_EVENTS - 1}" for j in range(FINISHERS)} for k in range(len(KILL_AT))]
        watcher = ListWatcher(s)
        watcher.start()
        kills, redelivered = [], 0
        for k, frac in enumerate(KILL_AT):
            target = int(frac * total)
            wait_committed(workers, target, t_start + BUDGET_S - time.monotonic())
            # Kill the moment a list for some user's *final* event shows up: the batch that applied it
            # is done, and its changelog records are most likely still in a worker's producer buffer.
            trigger = watcher.wait_any(finals[k], time.monotonic(), 60)
            victim = workers[k % N_WORKERS]
            victim.kill9()
            after = committed_offsets(s, s.app_id, s.kafka.topics.interactions.name)
            # Applied, changelogged but not committed: the worker taking over gets these again.
            ctail.catch_up()
            itail.catch_up()  # after the changelog: every event it names has been read
            hi: dict[int, int] = defaultdict(lambda: -1)
            for st in changelog.values():
                for eid in (st or {}).get("recent_event_ids", []):
                    p, off = where[eid]
                    hi[p] = max(hi[p], off)
            again = sum(max(0, hi[p] + 1 - after[p]) for p in range(PARTITIONS))
            redelivered += again
            try:
                ahead = local_store_ahead(victim.settings, changelog)
                ahead_txt = (f"{sum(map(len, ahead.values()))} events of {len(ahead)} users, e.g. "
                             f"{dict(list(sorted(ahead.items()))[:3])}")
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                ahead_txt = f"could not read RocksDB: {exc!r}"
            kills.append({"worker": k % N_WORKERS, "committed": sum(after.values()),
                          "committed_per_partition": after, "trigger": trigger,
                          "changelogged_not_committed": again, "rocksdb_ahead_of_changelog": ahead_txt})
            victim.start()
        producer.join(t_start + BUDGET_S - time.monotonic())
        produce_s = time.monotonic() - t0
        wait_committed(workers, total, t_start + BUDGET_S - time.monotonic())
        replay_s = time.monotonic() - t0
        assert all(w.alive() for w in workers), [w.tail() for w in workers]
        itail.catch_up()
        assert itail.records == total, f"read back {itail.records} interaction records, produced {total}"
        assert set(log) == set(range(PARTITIONS))
        assert all(kill["committed"] < total for kill in kills), f"a kill came after the replay: {kills}"

        # -- offline recomputation from the topic, every event id applied once -------------------
        expected: dict[str, UserState] = defaultdict(UserState)
        cooc, trending = new_cooccurrence(s.ranking), new_trending(s.ranking)
        applied_ids: dict[str, list[str]] = defaultdict(list)
        seen_ids: set[str] = set()
        dup_seen = 0
        for p in sorted(log):
            for r in log[p]:
                it = decode_interaction(r.value, max_future_s=None)
                if it.event_id in seen_ids:
                    dup_seen += 1
                    continue
                seen_ids.add(it.event_id)
                ok = ingest_interaction(expected[it.user_id], it.event_id, it.item_id, item_vecs[it.item_id],
                                        it.type, watch_ratio(it, durations[it.item_id]), it.ts, s.ranking,
                                        cooc=cooc, trending=trending)
                assert ok
                applied_ids[it.user_id].append(it.event_id)
        assert len(seen_ids) == N_EVENTS and dup_seen == n_dup
        assert max(len(v) for v in applied_ids.values()) <= s.ranking.dedupe_window  # ids comparable exactly
        assert max(len(r) for r in cooc.counts.values()) < COOC_MAX_NEIGHBORS

        # -- the workers' final user states (changelog) vs the recomputation ------------------------
        ctail.catch_up()
        missing_users = sorted(set(expected) - {u for u, v in changelog.items() if v})
        assert not missing_users, f"no state in the changelog for {missing_users}"
        lost: dict[str, list[str]] = {}
        extra: dict[str, list[str]] = {}
        twice: dict[str, int] = {}
        mismatch: list[str] = []
        for u, exp in expected.items():
            got = UserState.from_dict(changelog[u])
            got_ids = set(got.recent_event_ids)
            if missing := [e for e in applied_ids[u] if e not in got_ids]:
                lost[u] = missing
            if unknown := sorted(got_ids - set(applied_ids[u])):
                extra[u] = unknown
            if got.n_events != len(applied_ids[u]) - len(lost.get(u, [])):
                twice[u] = got.n_events - (len(applied_ids[u]) - len(lost.get(u, [])))
            if u in lost or u in extra or u in twice:
                continue
            try:
                np.testing.assert_allclose(got.sum_vec, exp.sum_vec, rtol=1e-4, atol=1e-5)
                assert got.updated_ts == pytest.approx(exp.updated_ts, abs=1e-6)
                assert list(got.recent_event_ids) == list(exp.recent_event_ids)
                assert list(got.seen) == list(exp.seen) and list(got.hidden) == list(exp.hidden)
                assert [tuple(h) for h in got.history] == [tuple(h) for h in exp.history]
            except AssertionError as exc:
                mismatch.append(f"{u}: {str(exc)[:400]}")
        assert not extra, f"state names events never sent / not applicable: {dict(list(extra.items())[:10])}"
        assert not twice, f"n_events minus distinct applied events in the state, per user (>0: applied twice): {twice}"
        assert not mismatch, "state differs from the offline recomputation:\n" + "\n".join(mismatch[:10])

        # -- the item state: co-occurrence, popularity, trending, as a new worker and the log see it --
        for how, store in (("snapshots + log", item_state_from_snapshots(s)),
                           ("whole log", item_state_from_the_whole_log(s))):
            diffs = item_state_differences(store, cooc, trending)
            assert not diffs, f"item state ({how}) differs from the recomputation in {len(diffs)} places: {diffs[:10]}"
        n_snapshot_records = sum(1 for _ in TopicTail.read_all(s, f"{s.app_id}-item-state"))
        assert n_snapshot_records > 0  # the owners did snapshot during the replay

        # -- Milvus users mirror (written in the background; heals on re-delivery) ----------------
        client = milvus_client(s.milvus)
        deadline = time.monotonic() + 30
        try:
            while True:
                rows = client.get(s.milvus.users_collection, ids=sorted(expected), output_fields=["vector"])
                mirrored = {r["user_id"]: np.asarray(r["vector"], np.float32) for r in rows}
                stale = []
                for u, exp in expected.items():
                    v = user_vector(exp)
                    if v is None:
                        continue  # no direction: the worker has nothing to mirror
                    if u not in mirrored:
                        stale.append(f"{u}: not in Milvus")
                    elif not np.allclose(mirrored[u], v, rtol=1e-4, atol=1e-5):
                        stale.append(f"{u}: cosine to recomputed {float(mirrored[u] @ v):.6f}")
                if not stale or time.monotonic() > deadline:
                    break
                time.sleep(1)
        finally:
            client.close()
        stale_mirror = [x for x in stale if x.split(":")[0] in lost]  # same users: reported with them below
        stale = [x for x in stale if x.split(":")[0] not in lost]
        assert not stale, f"Milvus users mirror differs from the recomputed state: {stale[:10]}"

        # -- the last published list of every user reflects the final state --------------------
        last_list: dict[str, tuple] = {}  # user -> (partition, offset, record)
        n_lists = 0

        def on_list(r):
            nonlocal n_lists
            if r.value is None:
                return
            n_lists += 1
            rec = decode_recommendation(r.value, max_future_s=None)
            last_list[rec.user_id] = (r.partition, r.offset, rec)

        rtail = TopicTail(s, s.kafka.topics.recommendations.name, on_list)
        tails.append(rtail)
        rtail.catch_up()
        wrong_tag, shows_seen = [], []
        for u, exp in expected.items():
            want = applied_ids[u][-1]
            if u not in last_list:
                wrong_tag.append(f"{u}: no list at all")
                continue
            rec = last_list[u][2]
            if rec.source_event_id != want:
                wrong_tag.append(f"{u}: last list from {rec.source_event_id} {where.get(rec.source_event_id)}, "
                                 f"last applied event {want} {where[want]}")
            elif bad := [i.item_id for i in rec.items if i.item_id in exp.seen or i.item_id in exp.hidden]:
                shows_seen.append(f"{u}: {bad[:5]}")
        assert not shows_seen, f"last lists show seen/hidden items: {shows_seen[:10]}"
        assert [w.starts for w in workers] == [2] * N_WORKERS

        n_lost = sum(len(v) for v in lost.values())
        summary = (f"{total} records ({N_EVENTS} distinct events + {n_dup} re-sent duplicates), "
                   f"{len(expected)} users, {N_ITEMS} items, {PARTITIONS} partitions, {N_WORKERS} workers; "
                   f"produced in {produce_s:.1f}s; {len(kills)} kill -9s {kills}; changelogged-but-uncommitted "
                   f"events re-delivered: {redelivered}; lists published: {n_lists}; lost={n_lost} "
                   f"users={sorted(lost)}; applied twice=0; item state: {len(cooc.counts)} rows, "
                   f"{sum(cooc.pops.values()):.0f} popularity counts equal to the recomputation (snapshot "
                   f"records {n_snapshot_records}); stale last lists={len(wrong_tag)}; stale Milvus vectors="
                   f"{len(stale_mirror)}; replay with kills {replay_s:.0f}s, test {time.monotonic() - t_start:.0f}s")
        print("\ncrash replay: " + summary)
        if lost or wrong_tag or stale_mirror:
            stale_lists = [x for x in wrong_tag if x.split(":")[0] not in lost]
            assert not stale_lists, f"last lists stale for users whose state is complete: {stale_lists[:10]}"
            raise ChangelogBehindLocalState(
                f"{n_lost} applied events missing from the user-state changelog after kill -9 "
                f"(user: event ids (partition, offset)): "
                f"{ {u: [(e, where[e]) for e in v] for u, v in list(lost.items())[:10]} }; "
                f"stale last lists: {wrong_tag[:10]}; stale Milvus user vectors: {stale_mirror[:10]}; "
                f"kills: {kills}")
    finally:
        if watcher is not None:
            watcher.stop_flag = True
        for t in tails:
            t.close()
        for w in workers:
            w.stop()
        workers[0].drop_collections()
