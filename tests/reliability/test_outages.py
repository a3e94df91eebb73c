"""Outages of Triton, Milvus and the Kafka broker during a live upload stream (real stack, real worker).

Each test starts a worker on its own topics, group and collections, produces a
steady trickle of text-only uploads (the cheapest to encode) from a background
thread, and stops one service of the session's stack for ``OUTAGE_S`` seconds
(30 by default, ``AVREC_TEST_OUTAGE_S`` to change) in the middle of the stream.
The service is always restarted, even when the test fails, so the rest of the
suite finds the stack healthy. Then:

* **no offset is committed past an unencoded upload**: while the service is
  down, the worker's consumer group's committed offsets are sampled per
  partition; every upload below a committed offset (known from the producer's
  record metadata) must already be in Milvus;
* **nothing is lost, nothing is doubled**: after the service returns, every
  upload is in Milvus exactly once (``count(*)`` equals the number of distinct
  uploads, and every id appears once), and nothing was dead-lettered;
* **the outage is visible**: the Triton circuit breaker logs one warning when it
  opens and one line when it closes; the worker logs held events and the retry
  that succeeded.

Measured figures go to the test log (``-o log_cli=true`` shows them live).
A few tests at the end check the retry policy itself (no stack needed): outages
are retried for as long as they last, errors that are not outages are not
retried forever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from tests.workerproc import WorkerProcess, worker_env

log = logging.getLogger(__name__)

OUTAGE_S = float(os.environ.get("AVREC_TEST_OUTAGE_S", "30"))
# At RATE per second the stream lasts N_UPLOADS / RATE s: long enough to span the stop and the outage.
N_UPLOADS, RATE = 300, 4.0
NOW = time.time()
WORDS = ("pasta", "engine", "guitar", "sunset", "kitten", "rocket", "garden", "chess", "surf", "bread", "drums",
         "volcano", "origami", "robot", "jazz", "marathon")


def text_upload(item_id: str, k: int) -> dict:
    w = [WORDS[(k * 7 + j) % len(WORDS)] for j in range(3)]
    return {"event_id": f"ev-{item_id}", "item_id": item_id, "creator_id": f"cr{k % 5}",
            "title": f"{w[0]} and {w[1]} video number {k}", "tags": [w[2]], "created_at": NOW - 600}


# ------------------------------------------------------------------------------------------- helpers


@dataclass
class Trickle:
    """Produces ``items`` at ``rate`` per second from a thread; remembers where each record landed."""

    worker: WorkerProcess
    items: list[dict]
    rate: float
    placed: dict[str, tuple[int, int]] = field(default_factory=dict)  # item_id -> (partition, offset)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> "Trickle":
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        s = self.worker.settings
        topic = s.kafka.topics.uploads.name
        import orjson

        # Records sent while the broker is down wait in the producer (up to delivery_timeout_ms).
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all", linger_ms=0,
                                 max_block_ms=180_000, delivery_timeout_ms=240_000, retries=1_000_000)
        try:
            for rec in self.items:
                item_id = rec["item_id"]
                fut = producer.send(topic, key=item_id.encode(), value=orjson.dumps(rec))
                fut.add_callback(lambda md, i=item_id: self.placed.__setitem__(i, (md.partition, md.offset)))
                fut.add_errback(lambda exc, i=item_id: self.errors.append(f"{i}: {exc!r}"))
                self.sent += 1
                time.sleep(1.0 / self.rate)
            producer.flush(240)
        finally:
            producer.close(10)

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish"
        assert not self.errors, f"the test's producer failed to deliver: {self.errors[:5]}"
        assert len(self.placed) == len(self.items)


class Probe:
    """Reads the worker's committed offsets and its items in Milvus."""

    def __init__(self, worker: WorkerProcess) -> None:
        from streams.vectors.milvus import milvus_client

        self.s = worker.settings
        self.topic = self.s.kafka.topics.uploads.name
        self.partitions = self.s.kafka.topics.uploads.partitions
        self.collection = self.s.milvus.items_collection
        self.milvus = milvus_client(self.s.milvus)
        self._consumer: KafkaConsumer | None = None

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (0 where nothing was committed)."""
        if self._consumer is None:
            self._consumer = KafkaConsumer(**self.s.kafka.kafka_python_config(), group_id=self.s.app_id,
                                           enable_auto_commit=False)
        return {p: self._consumer.committed(TopicPartition(self.topic, p)) or 0 for p in range(self.partitions)}

    def reset_kafka(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def ids(self) -> Counter:
        """Every item id in the worker's collection, with how many rows carry it."""
        if not self.milvus.has_collection(self.collection):
            return Counter()
        rows = self.milvus.query(self.collection, filter='item_id != ""', output_fields=["item_id"], limit=16384)
        return Counter(r["item_id"] for r in rows)

    def count(self) -> int:
        rows = self.milvus.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        self.reset_kafka()
        self.milvus.close()


def committed_but_missing(committed: dict[int, int], placed: dict[str, tuple[int, int]], present) -> list[str]:
    """Uploads below their partition's committed offset that are not in ``present``."""
    return sorted(i for i, (p, o) in placed.items() if o < committed.get(p, 0) and i not in present)


def dead_letters(worker: WorkerProcess) -> list:
    consumer = worker.consumer("uploads_dlq")
    got = []
    try:
        for _ in range(4):
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(recs)
    finally:
        consumer.close()
    return got


@contextmanager
def stopped(settings, name: str):
    """Stop one service of the session's stack; always start it again (and wait until ready) on the way out."""
    from deploy.local.stack import LocalStack

    svc = LocalStack(settings, only=[name]).services[name]
    t0 = time.monotonic()
    svc.stop()
    log.info("%s stopped in %.1f s", name, time.monotonic() - t0)
    times: dict[str, float] = {"stopped_at": time.monotonic()}
    try:
        yield times
    finally:
        if not svc.running():
            t1 = time.monotonic()
            svc.start_and_wait()
            times["ready_at"] = time.monotonic()
            log.info("%s restarted, ready after %.1f s", name, times["ready_at"] - t1)
        else:
            svc.wait_ready()
            times["ready_at"] = time.monotonic()


def wait_until(predicate, timeout: float, what: str, worker: WorkerProcess, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if not worker.alive():
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.tail()}")
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{worker.tail(80)}")


@pytest.fixture
def worker(stack, tmp_path):
    unique = "out" + uuid.uuid4().hex[:8]
    # No user state: fan-out finds nobody, so the only writes are item upserts.
    w = WorkerProcess(worker_env(unique), tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()
    try:
        w.drop_collections()
    except Exception as exc:  # noqa: BLE001 - cleanup only; never hide the test's own failure
        log.warning("could not drop the test collections: %s", exc)


def uploads(prefix: str, n: int) -> list[dict]:
    return [text_upload(f"{prefix}{k:04d}", k) for k in range(n)]


def assert_exactly_once(probe: Probe, items: list[dict]) -> None:
    ids = probe.ids()
    want = {i["item_id"] for i in items}
    assert set(ids) == want, f"missing {sorted(want - set(ids))[:10]}, unexpected {sorted(set(ids) - want)[:10]}"
    doubled = {i: c for i, c in ids.items() if c != 1}
    assert not doubled, f"items stored more than once: {doubled}"
    assert probe.count() == len(want)


def caught_up(probe: Probe, trickle: Trickle, t: dict, worker: WorkerProcess) -> tuple[float, list[str]]:
    """Seconds from the service being ready again until every upload produced by then is in Milvus,
    and the uploads that were committed while missing from Milvus in the meantime (must be none)."""
    backlog = {i["item_id"] for i in trickle.items[:trickle.sent]}
    violations: list[str] = []
    deadline = time.monotonic() + 180
    t.pop("delivered_at", None)
    while time.monotonic() < deadline:
        if "delivered_at" not in t and backlog <= set(trickle.placed):
            t["delivered_at"] = time.monotonic()  # the test's producer got the backlog into Kafka
        try:
            committed = probe.committed()
        except KafkaError as exc:  # the coordinator may still be loading right after a broker restart
            log.info("committed offsets not readable yet: %s", exc)
            committed = None
        present = set(probe.ids())  # read after the offsets: Milvus only grows
        if committed is not None:
            violations += committed_but_missing(committed, trickle.placed, present)
        if backlog <= present:
            return time.monotonic() - t["ready_at"], violations
        if not worker.alive():
            raise AssertionError(f"worker died while catching up:\n{worker.tail()}")
        time.sleep(0.5)
    raise AssertionError(f"the backlog never reached Milvus after the service returned\n{worker.tail(80)}")


def report(name: str, **figures) -> None:
    log.info("%s: %s", name, ", ".join(f"{k}={v}" for k, v in figures.items()))


# --------------------------------------------------------------------------------------------- tests

@pytest.mark.stack
def test_triton_outage_holds_uploads_and_loses_none(worker, settings):
    items = uploads("t", N_UPLOADS)
    probe = Probe(worker)
    trickle = Trickle(worker, items, rate=RATE).start()
    try:
        wait_until(lambda: len(probe.ids()) >= 20, 60, "the first uploads in Milvus", worker)
        samples, violations = [], []
        with stopped(settings, "triton") as t:
            in_milvus_at_stop = len(probe.ids())
            while time.monotonic() - t["stopped_at"] < OUTAGE_S:
                committed = probe.committed()
                present = probe.ids()  # read after the offsets: Milvus only grows
                samples.append((sum(committed.values()), len(present)))
                violations += committed_but_missing(committed, trickle.placed, present)
                time.sleep(2.0)
            produced_during = trickle.sent
        recovered_s, late = caught_up(probe, trickle, t, worker)
        violations = list(violations) + late
        trickle.join(120)
        wait_until(lambda: len(probe.ids()) >= len(items), 180, "every upload in Milvus after Triton returned",
                   worker)
        assert not violations, f"offsets committed past uploads that are not in Milvus: {sorted(set(violations))[:10]}"
        held = max(n for _, n in samples)
        assert held < produced_during, "the outage did not hold any upload (did Triton really stop?)"
        assert_exactly_once(probe, items)
        assert not dead_letters(worker), "uploads were dead-lettered during the outage"

        text = worker.new_log()
        opened = [ln for ln in text.splitlines() if "circuit OPEN" in ln]
        closed = [ln for ln in text.splitlines() if "circuit closed" in ln]
        assert len(opened) == 1, f"the breaker must announce the outage once, got {len(opened)}:\n{opened}"
        assert len(closed) == 1, f"the breaker must announce the recovery once, got {len(closed)}:\n{closed}"
        assert "unavailable" in opened[0] or "refused" in opened[0].lower() or "Error" in opened[0]
        assert "events held" in text and "succeeded after" in text
        assert "never retrieved" not in text, "infer_many left a task's exception unread"
        report("triton outage", uploads=len(items), in_milvus_at_stop=in_milvus_at_stop,
               down_s=round(t["ready_at"] - t["stopped_at"], 1), max_committed_during=max(c for c, _ in samples),
               max_in_milvus_during=held, backlog_done_after_ready_s=round(recovered_s, 1), lost=0, duplicated=0,
               breaker_open=opened[0].split(": ", 1)[-1][:160], breaker_closed=closed[0].split(": ", 1)[-1])
    finally:
        probe.close()


@pytest.mark.stack
def test_milvus_outage_holds_uploads_and_loses_none(worker, settings):
    items = uploads("m", N_UPLOADS)
    probe = Probe(worker)
    trickle = Trickle(worker, items, rate=RATE).start()
    try:
        wait_until(lambda: len(probe.ids()) >= 20, 60, "the first uploads in Milvus", worker)
        samples = []
        with stopped(settings, "milvus") as t:
            produced_at_stop = trickle.sent
            while time.monotonic() - t["stopped_at"] < OUTAGE_S:
                samples.append(probe.committed())
                time.sleep(2.0)
            produced_during = trickle.sent
        # Milvus cannot be read while it is down; it only grows, so what it holds right after the
        # restart bounds what it held during the outage: a committed offset must not pass it.
        present = probe.ids()
        violations = sorted({i for c in samples for i in committed_but_missing(c, trickle.placed, present)})
        recovered_s, late = caught_up(probe, trickle, t, worker)
        violations = list(violations) + late
        trickle.join(120)
        wait_until(lambda: len(probe.ids()) >= len(items), 180, "every upload in Milvus after Milvus returned",
                   worker)
        assert not violations, f"offsets committed past uploads that are not in Milvus: {violations[:10]}"
        assert max(sum(c.values()) for c in samples) < produced_during, "the outage held nothing"
        assert_exactly_once(probe, items)
        assert not dead_letters(worker), "uploads were dead-lettered during the outage"
        text = worker.new_log()
        assert "upsert items failed" in text and "events held" in text
        assert "upsert items succeeded after" in text
        report("milvus outage", uploads=len(items), down_s=round(t["ready_at"] - t["stopped_at"], 1),
               max_committed_during=max(sum(c.values()) for c in samples), produced_at_stop=produced_at_stop,
               backlog_done_after_ready_s=round(recovered_s, 1), lost=0, duplicated=0)
    finally:
        probe.close()


@pytest.mark.stack
def test_kafka_broker_restart_loses_no_upload(worker, settings):
    items = uploads("k", N_UPLOADS)
    probe = Probe(worker)
    trickle = Trickle(worker, items, rate=RATE).start()
    try:
        wait_until(lambda: len(probe.ids()) >= 20, 60, "the first uploads in Milvus", worker)
        before = probe.committed()
        violations = committed_but_missing(before, trickle.placed, probe.ids())
        probe.reset_kafka()
        with stopped(settings, "kafka") as t:
            in_milvus_at_stop = len(probe.ids())
            time.sleep(OUTAGE_S)
            # The broker is gone: nothing new can reach the worker.
            in_milvus_during = len(probe.ids())
        recovered_s, late = caught_up(probe, trickle, t, worker)
        violations = list(violations) + late
        trickle.join(240)
        wait_until(lambda: len(probe.ids()) >= len(items), 240, "every upload in Milvus after the broker returned",
                   worker)
        after = wait_until(lambda: (c := probe.committed()) and sum(c.values()) >= len(items) and c, 60,
                           "offsets committed after the restart", worker)
        assert not violations, f"offsets committed past uploads that are not in Milvus: {sorted(set(violations))[:10]}"
        assert_exactly_once(probe, items)
        assert not dead_letters(worker)
        assert worker.alive() and worker.starts == 1, "the worker must ride out the restart, not be restarted"
        # aiokafka's reconnect errors are rate-limited (streams/log_filters.py): without it
        # this outage wrote ~1,700 "Unable connect" lines and ~3,400 ERROR lines in all.
        log_text = worker.log_path.read_text(errors="replace")
        unable = log_text.count("Unable connect to node")
        errors = log_text.count("[ERROR]")
        assert 1 <= unable <= 10, f"{unable} 'Unable connect to node' lines: the repeat limiter is not working"
        assert errors <= 100, f"{errors} ERROR lines in the worker log during a {OUTAGE_S} s broker restart"
        report("kafka restart", uploads=len(items), in_milvus_at_stop=in_milvus_at_stop,
               in_milvus_during=in_milvus_during, down_s=round(t["ready_at"] - t["stopped_at"], 1),
               committed_after=sum(after.values()), backlog_done_after_ready_s=round(recovered_s, 1),
               backlog_in_kafka_after_ready_s=round(t.get("delivered_at", float("nan")) - t["ready_at"], 1), lost=0,
               duplicated=0)
    finally:
        probe.close()


# ------------------------------------------------------------------- the retry policy (no stack needed)


class _Cfg:
    retry_initial_s = 0.001
    retry_max_s = 0.002


async def test_outages_are_retried_until_they_end():
    from encoders.exceptions import CircuitOpen
    from streams.exceptions import VectorStoreError
    from streams.services.retry import until_done

    import grpc
    from pymilvus.exceptions import MilvusException

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    def milvus_down() -> VectorStoreError:
        try:
            try:
                raise Unavailable()
            except Unavailable as rpc:
                raise MilvusException(code=rpc.code, message="[upsert_rows] Retry timeout: 10s") from rpc
        except MilvusException as exc:
            try:
                raise VectorStoreError(f"Milvus upsert items failed: {exc.message}") from exc
            except VectorStoreError as wrapped:
                return wrapped

    errors = [CircuitOpen("open"), ConnectionRefusedError("refused"), TimeoutError()] + [milvus_down()] * 30
    calls = 0

    async def op():
        nonlocal calls
        calls += 1
        if calls <= len(errors):
            raise errors[calls - 1]
        return "ok"

    assert await until_done("op", op, _Cfg()) == "ok"
    assert calls == len(errors) + 1


async def test_errors_that_are_not_outages_are_not_retried_forever():
    from pymilvus.exceptions import MilvusException

    from streams.exceptions import VectorStoreError
    from streams.services.retry import PERMANENT_ATTEMPTS, is_outage, until_done

    def refused(code: int, msg: str) -> VectorStoreError:
        try:
            raise MilvusException(code=code, message=msg)
        except MilvusException as exc:
            try:
                raise VectorStoreError(f"Milvus upsert items failed: {msg}") from exc
            except VectorStoreError as wrapped:
                return wrapped

    calls = 0

    async def op():
        nonlocal calls
        calls += 1
        raise refused(100, "collection not found")

    with pytest.raises(VectorStoreError):
        await until_done("op", op, _Cfg())
    assert calls == PERMANENT_ATTEMPTS
    assert not is_outage(refused(65535, "the length(10) of float data should divide the dim(384)"))
    assert is_outage(refused(2, "Fail connecting to server on 127.0.0.1:19530, illegal connection params or "
                                "server unavailable"))

    # Something not retryable at all propagates at once.
    calls = 0

    async def bug():
        nonlocal calls
        calls += 1
        raise KeyError("x")

    with pytest.raises(KeyError):
        await until_done("op", bug, _Cfg())
    assert calls == 1


def test_milvus_calls_carry_a_whole_second_deadline(monkeypatch):
    """pymilvus retries a refused connection ~210 s unless the call has an ``int`` timeout."""
    from pymilvus import MilvusClient

    from streams.vectors.milvus import DeadlineMilvusClient

    seen: dict[str, object] = {}

    def fake(name):
        def call(self, *args, **kwargs):
            seen[name] = kwargs.get("timeout")
        return call

    for name in ("upsert", "query", "search", "load_collection"):
        monkeypatch.setattr(MilvusClient, name, fake(name))
    client = DeadlineMilvusClient.__new__(DeadlineMilvusClient)  # no connection needed
    client._avrec_call_timeout = 3
    client.upsert("items", [])
    client.query("items", filter="", timeout=7)
    client.search("items", data=[])
    client.load_collection("items")
    assert seen == {"upsert": 3, "query": 7, "search": 3, "load_collection": None}
    assert isinstance(seen["upsert"], int)


async def test_a_batch_closes_the_circuit_once_triton_is_back():
    """Half-open admits one trial; a batch must let it settle instead of cancelling it (the stall found above)."""
    import asyncio

    import aiohttp
    import numpy as np
    import tritonclient.http.aio as http_aio

    from encoders.breaker import CLOSED, OPEN
    from encoders.client import TritonClient
    from encoders.exceptions import TritonUnavailable
    from streams.settings import TritonSettings

    now = [0.0]
    client = TritonClient(TritonSettings(url="127.0.0.1:1", max_retries=0, breaker_failures=1, breaker_reset_s=1.0),
                          clock=lambda: now[0])

    class Result:
        def as_numpy(self, name):
            return np.zeros((1, 4), np.float32)

    class FakeTriton:
        up = False

        async def infer(self, model, inputs, outputs=None):
            await asyncio.sleep(0.01)
            if not self.up:
                raise aiohttp.ClientConnectionError("connection refused")
            return Result()

        async def close(self):
            pass

    fake = FakeTriton()
    client._client, client._mod = fake, http_aio
    batch = [{"TEXT": np.array([[b"x"]], dtype=np.object_)}] * 8
    with pytest.raises(TritonUnavailable):
        await client.infer_many("text_encoder", batch, ["EMBEDDING"])
    assert client.breaker.state == OPEN
    fake.up = True
    now[0] += 1.0  # the reset period has passed: half-open
    out = await client.infer_many("text_encoder", batch, ["EMBEDDING"])
    assert len(out) == 8 and client.breaker.state == CLOSED
