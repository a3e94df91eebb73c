"""Interactions path, end to end: sustained events/s and latency from send to the refreshed list.

    make stack-up
    .venv/bin/python bench/interactions.py --items 100000 --users 10000,100000 --events 20000 \
        --rate 2000 --latency-rate 100 --catalogue bench_cat100k --json-out bench/results/interactions.json

Three modes, measured one after the other in one run, on the same catalogue:

* **optimised**: the worker as shipped (batched ``take_events``, batched Milvus
  searches overlapping the ranking, item and table caches, vectorised scoring);
* **naive**: the same code with batching and caches switched off by settings
  (one event at a time, one Milvus search per event, every item fetched from Milvus);
* **floor**: the same Kafka produce -> consume loop with no processing at all.

Each worker mode runs on fresh state (new app id, topics and users) in two phases:
*saturation* offers ``--rate`` events/s, far above what one worker sustains, and
gives the throughput; *paced* offers ``--latency-rate`` events/s, below it, and
gives the latency distribution without queueing in front of the worker.

Latency is from the producer's ``send`` of an interaction to the consumer's receipt
of the first list for that user tagged with that interaction or a later one (the
worker publishes one list per user per batch). The catalogue holds synthetic unit
vectors (clustered), inserted straight into Milvus.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_meter import CpuMeter, stack_pids  # noqa: E402
from bench.gc_pauses import watched_collections  # noqa: E402
from bench.pacing import paced  # noqa: E402
from bench.report import emit  # noqa: E402
from streams.kafka.admin import admin_client, ensure_topics  # noqa: E402
from streams.settings import TopicSpec  # noqa: E402
from streams.vectors.collections import ItemCollection  # noqa: E402
from streams.vectors.milvus import milvus_client  # noqa: E402
from tests.workerproc import WorkerProcess, worker_env  # noqa: E402

log = logging.getLogger("bench.interactions")
DIM = 384


def clustered_vectors(n: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.standard_normal((clusters, DIM)).astype(np.float32)
    v = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def load_catalogue(settings, n_items: int, rng: np.random.Generator, reuse: bool = False) -> float:
    # Bulk loading 4,000-row chunks on a busy machine can outlast the worker's per-call deadline.
    client = milvus_client(settings.milvus.model_copy(update={"timeout_s": 600.0}))
    name = settings.milvus.items_collection
    if reuse and client.has_collection(name):
        n = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
        if n >= n_items:
            log.warning("reusing catalogue %s (%d items)", name, n)
            client.close()
            return 0.0
    items = ItemCollection(client, name, DIM)
    items.ensure()
    vecs = clustered_vectors(n_items, 200, rng)
    zeros = [0.0] * DIM
    t0 = time.perf_counter()
    for start in range(0, n_items, 4000):
        rows = [{"item_id": f"it{i}", "vector": vecs[i].tolist(), "text_vec": vecs[i].tolist(), "audio_vec": zeros,
                 "video_vec": zeros, "creator_id": f"cr{i % 5000}", "title": f"item {i}", "tags": "",
                 "created_at": int((time.time() - 86400 * 30) * 1000), "available": True, "modalities": "text",
                 "duration_s": 30.0} for i in range(start, min(n_items, start + 4000))]
        items.upsert(rows)
    took = time.perf_counter() - t0
    client.close()
    return took


class Receiver(threading.Thread):
    """Consumes a topic and records the receipt time of each source event id."""

    def __init__(self, consumer: KafkaConsumer, id_of) -> None:
        super().__init__(daemon=True)
        self.consumer, self.id_of = consumer, id_of
        self.received: dict[str, float] = {}
        self.produced: dict[str, float] = {}  # the record's Kafka timestamp: when the worker sent it
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            for recs in self.consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in recs:
                    key = self.id_of(r.value)
                    if key is not None:
                        self.received.setdefault(key, now)
                        self.produced.setdefault(key, r.timestamp / 1000.0)


def drive(producer: KafkaProducer, topic: str, events: list[dict],
          rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """Send ``events`` at ``rate``: each one's send time on the perf clock and on the wall clock
    (the latter to compare with the Kafka timestamps of the answering lists)."""
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    for e in paced(events, rate):
        sent[e["event_id"]] = time.perf_counter()
        sent_wall[e["event_id"]] = time.time()
        producer.send(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
    producer.flush(60)
    return sent, sent_wall


def answered_at(events: list[dict], received: dict[str, float]) -> dict[str, float]:
    """When each event's effect was first visible: the first list for its user tagged with it or a later event.

    The worker publishes one list per user per batch, tagged with that user's last
    event in the batch; that list answers the user's earlier events in the batch too.
    """
    out: dict[str, float] = {}
    later: dict[str, float] = {}
    for e in reversed(events):
        t = min(received.get(e["event_id"], float("inf")), later.get(e["user_id"], float("inf")))
        later[e["user_id"]] = t
        if t < float("inf"):
            out[e["event_id"]] = t
    return out


def summarize(sent: dict[str, float], received: dict[str, float], wall: float,
              in_worker: dict[str, float] | None = None) -> dict:
    ids = [i for i in sent if i in received]
    lat = np.array([received[i] - sent[i] for i in ids]) * 1000
    done = len(lat)
    t0 = min(sent.values(), default=0.0)
    # The slowest answers: when they were sent (s into the phase), their latency, and how
    # much of it passed before the worker sent the list (Kafka record timestamp; None when
    # a later event's list answered). A tail bunched at one moment is a stall somewhere;
    # one spread over the phase is per-event cost.
    worst = sorted(zip(lat.tolist(), ids), reverse=True)[:10]
    in_worker = in_worker or {}
    # Send -> the worker's send of the list, for the events whose own list answered them: the rest of
    # the latency is the list's way back through Kafka to this generator.
    own = np.array(list(in_worker.values())) if in_worker else None
    return {
        "worst": [[round(sent[i] - t0, 2), round(ms, 1),
                   round(in_worker[i], 1) if i in in_worker else None] for ms, i in worst],
        "events": len(sent), "completed": done,
        "events_per_s": round(done / wall, 1) if wall > 0 else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if done else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if done else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if done else None,
        **({"to_list_sent_p50_ms": round(float(np.percentile(own, 50)), 1),
            "to_list_sent_p99_ms": round(float(np.percentile(own, 99)), 1)} if own is not None else {}),
    }


def make_events(n: int, users: int, items: int, rng: np.random.Generator, tag: str) -> list[dict]:
    # Zipf-ish popularity over items, uniform users: realistic skew for caches.
    item_ids = np.minimum(rng.zipf(1.3, n), items) - 1
    user_ids = rng.integers(0, users, n)
    types = rng.choice(["view", "like", "complete", "skip", "share"], n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    now = time.time()
    return [{"event_id": f"{tag}-{k}", "user_id": f"u{user_ids[k]}", "item_id": f"it{item_ids[k]}",
             "type": str(types[k]), "watch_ms": int(rng.integers(1000, 30000)), "ts": now - n + k}
            for k in range(n)]


def measure(kafka, produce_topic: str, consume_topic: str, id_of, events: list[dict], rate: float,
            drain_s: float, keep_going=lambda: True) -> dict:
    """Send ``events`` to ``produce_topic`` at ``rate``; time each one's answer on ``consume_topic``."""
    consumer = KafkaConsumer(consume_topic, **kafka.kafka_python_config(), auto_offset_reset="latest",
                             enable_auto_commit=False, group_id=None)
    consumer.poll(timeout_ms=1000)  # partitions assigned and positioned before the first send
    rx = Receiver(consumer, id_of)
    rx.start()
    producer = KafkaProducer(**kafka.kafka_python_config(), acks=1, linger_ms=1)
    # The topic's metadata before the clock starts: a cold producer's first send blocks ~110 ms for it,
    # and the paced schedule then catches up with a burst of every event due meanwhile (~110 at
    # 1,000/s, half a percent of a 20 s phase) that all queue in one worker batch.
    producer.partitions_for(produce_topic)
    with watched_collections() as collections:
        t0, started_at = time.perf_counter(), time.time()
        sent, sent_wall = drive(producer, produce_topic, events, rate)
        deadline = time.perf_counter() + drain_s
        while time.perf_counter() < deadline and keep_going():
            if len(answered_at(events, dict(rx.received))) >= len(sent):
                break
            time.sleep(0.2)
        rx.stop_flag = True
        rx.join(2)
    producer.close()
    consumer.close()
    done = answered_at(events, rx.received)
    wall = max(done.values(), default=t0) - t0
    # Where each answered-by-its-own-list event's time went: up to the worker's send of the list.
    in_worker = {i: (rx.produced[i] - sent_wall[i]) * 1000 for i in sent_wall if i in rx.produced}
    # started_at (epoch s) places the worst answers ("worst": s into the phase) in the worker's and the
    # broker's logs.
    return {**summarize(sent, done, wall, in_worker), "started_at": round(started_at, 3),
            "generator_gc": collections.report(t0)}


def run_worker_mode(name: str, env_extra: dict, args, users: int, log_dir: Path, base_env: dict, rng) -> dict:
    """One fresh worker: a saturation phase (throughput), then a paced phase (latency)."""
    w = WorkerProcess({**base_env, **env_extra}, log_dir / f"worker-{name}.log")
    w.start()
    s = w.settings
    id_of = lambda v: orjson.loads(v)["source_event_id"] if v else None  # noqa: E731
    naive = name.startswith("naive")
    try:
        out: dict = {"users": users}
        n = args.naive_events if naive else args.events
        events = make_events(n, users, args.items, rng, f"{name}-sat-{uuid.uuid4().hex[:6]}")
        out["saturation"] = saturate(w, events, args, log_dir / f"profile-{name}-{users}.txt")
        rate = args.naive_latency_rate if naive else args.latency_rate
        if rate > 0:
            n = max(200, int(rate * args.latency_s))
            events = make_events(n, users, args.items, rng, f"{name}-lat-{uuid.uuid4().hex[:6]}")
            out["paced"] = measure(s.kafka, s.kafka.topics.interactions.name, s.kafka.topics.recommendations.name,
                                   id_of, events, rate, args.drain_s, keep_going=w.alive)
            out["paced"]["offered_rate"] = rate
        out["worker_alive"] = w.alive()
        return out
    finally:
        w.stop()
        drop_run_state(w)


def drop_run_state(*workers: WorkerProcess) -> None:
    """Delete a stopped run's topics (its prefix's and Faust's changelogs; the workers share them) and
    each worker's RocksDB folder. Kept, every run would leave ~40 topics and ~200 partitions behind, and
    a broker holding thousands of them (11k partitions and 21 GB after a few dozen runs) answers later
    runs measurably slower."""
    first = workers[0]
    try:
        log.info("deleted %d topics of %s", len(first.drop_topics()), first.settings.app_id)
    except Exception as e:  # noqa: BLE001 - the measurements are taken; a leftover topic must not lose them
        log.warning("could not delete the run's topics (%s): delete topics starting with %s by hand", e,
                    first.settings.kafka.topic_prefix)
    for w in workers:
        shutil.rmtree(w.settings.faust_datadir, ignore_errors=True)


def saturate(w: WorkerProcess, events: list[dict], args, profile_path: Path) -> dict:
    """The saturation phase: ``events`` offered at ``args.rate`` to the worker's input topic, answers
    timed on its lists, CPU ms per event of every process, and with --profile a py-spy report."""
    s = w.settings
    id_of = lambda v: orjson.loads(v)["source_event_id"] if v else None  # noqa: E731
    spy = profiler(args, w, profile_path)
    meter = CpuMeter({"worker": w.proc.pid, "bench": os.getpid(), **stack_pids(s)})
    meter.start()
    out = measure(s.kafka, s.kafka.topics.interactions.name, s.kafka.topics.recommendations.name,
                  id_of, events, args.rate, args.drain_s, keep_going=w.alive)
    out.update(meter.per_event(out["completed"], SERVER_SIDE))
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its report on SIGINT
        spy.wait(60)
    return out


def bench_setup(prefix: str, catalogue: str | None) -> tuple[str, dict, Path]:
    """(a unique run id, the workers' base environment on it, the log folder) for one benchmark run;
    ``catalogue`` names the Milvus items collection to use (default: the run's own)."""
    unique = prefix + uuid.uuid4().hex[:8]
    base_env = worker_env(unique, {"AVREC_LOG_LEVEL": "INFO", "AVREC_WORKER__STATS_EVERY_S": "5"})
    if catalogue:
        base_env["AVREC_MILVUS__ITEMS_COLLECTION"] = catalogue
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return unique, base_env, log_dir


def profiler(args, w: WorkerProcess, path: Path) -> subprocess.Popen | None:
    """With --profile, sample the worker with py-spy for the saturation phase (a flat "raw" report)."""
    if not args.profile:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([spy, "record", "--pid", str(w.proc.pid), "--format", "raw", "--rate", "200",
                             "--output", str(path), "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run_floor(args, rng) -> dict:
    """The physical floor: produce -> consume through Kafka, nothing in between, at both rates."""
    from streams.settings import Settings

    kafka = Settings().kafka
    topic = f"floor-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(name=topic, partitions=8)])
    id_of = lambda v: orjson.loads(v)["event_id"]  # noqa: E731
    meter = CpuMeter({"bench": os.getpid(), **stack_pids(Settings())})
    meter.start()
    out = {"saturation": measure(kafka, topic, topic, id_of, make_events(args.events, 10_000, args.items, rng, "fs"),
                                 args.rate, args.drain_s)}
    out["saturation"].update(meter.per_event(out["saturation"]["completed"], SERVER_SIDE))
    if args.latency_rate > 0:
        n = max(200, int(args.latency_rate * args.latency_s))
        out["paced"] = measure(kafka, topic, topic, id_of, make_events(n, 10_000, args.items, rng, "fp"),
                               args.latency_rate, args.drain_s)
        out["paced"]["offered_rate"] = args.latency_rate
    admin = admin_client(kafka)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    return out


def mode_env(unique: str, tag: str, extra: dict | None = None) -> dict:
    """A fresh app id and topic prefix (fresh state), same catalogue."""
    return {"AVREC_APP_ID": f"avrec-{unique}-{tag}", "AVREC_KAFKA__TOPIC_PREFIX": f"{unique}{tag}-", **(extra or {})}


# The processes on the request path; "bench" (this load generator's producer and
# consumer) is metered too but would run elsewhere in production.
SERVER_SIDE = ("worker", "kafka", "milvus", "triton")

# Naive: no batching or caching anywhere, the user-vector mirror's write pacing included.
NAIVE = {"AVREC_WORKER__INTERACTION_BATCH": "1", "AVREC_WORKER__ITEM_CACHE_SIZE": "0",
         "AVREC_WORKER__SEARCH_CHUNK": "1",
         "AVREC_WORKER__USER_MIRROR_EVERY_S": "0"}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", default="10000,100000", help="comma-separated user counts (one worker run each)")
    p.add_argument("--events", type=int, default=20_000, help="events in the saturation phase")
    p.add_argument("--naive-events", type=int, default=2_000)
    p.add_argument("--rate", type=float, default=2000.0, help="offered events/s in the saturation phase")
    p.add_argument("--latency-rate", type=float, default=100.0, help="offered events/s in the paced phase (0: skip)")
    p.add_argument("--naive-latency-rate", type=float, default=20.0)
    p.add_argument("--latency-s", type=float, default=30.0, help="length of the paced phase")
    p.add_argument("--drain-s", type=float, default=300.0)
    p.add_argument("--modes", default="floor,optimised,naive")
    p.add_argument("--json-out")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the worker during each saturation phase (profile-*.txt beside the logs)")
    p.add_argument("--catalogue", help="Milvus items collection to use; loaded only if missing "
                                        "(kept afterwards, so reruns skip the load)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    unique, base_env, log_dir = bench_setup("bench", args.catalogue)
    probe = WorkerProcess(base_env, log_dir / "probe.log")
    user_counts = [int(u) for u in args.users.split(",")]
    result: dict = {"items": args.items, "offered_rate": args.rate, "latency_rate": args.latency_rate}
    result["catalogue_load_s"] = round(load_catalogue(probe.settings, args.items, rng, reuse=bool(args.catalogue)), 1)
    modes = args.modes.split(",")
    if "floor" in modes:
        result["floor"] = run_floor(args, rng)
    for users in user_counts if "optimised" in modes else []:
        result[f"optimised_{users}"] = run_worker_mode(f"optimised-{users}", mode_env(unique, f"o{users}"), args,
                                                       users, log_dir, base_env, rng)
    if "naive" in modes:
        users = user_counts[0]
        result[f"naive_{users}"] = run_worker_mode(f"naive-{users}", mode_env(unique, f"n{users}", NAIVE), args,
                                                   users, log_dir, base_env, rng)
    result["ratios"] = ratios(result, user_counts[0])
    emit(result, args.json_out)
    if args.catalogue:
        # Keep the catalogue for the next run; drop only the per-run users collection.
        client = milvus_client(probe.settings.milvus)
        client.drop_collection(probe.settings.milvus.users_collection)
        client.close()
    else:
        probe.drop_collections()


def ratios(result: dict, users: int) -> dict:
    """(a)/(b) throughput, and (a) - (c) latency at the paced rate."""
    out: dict = {}
    o, n, f = result.get(f"optimised_{users}"), result.get(f"naive_{users}"), result.get("floor")
    if o and n and o["saturation"]["events_per_s"] and n["saturation"]["events_per_s"]:
        out["optimised_over_naive_throughput"] = round(o["saturation"]["events_per_s"] /
                                                       n["saturation"]["events_per_s"], 2)
    if o and f and "paced" in o and "paced" in f and o["paced"]["p50_ms"] is not None:
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            out[f"optimised_minus_floor_{q}"] = round(o["paced"][q] - f["paced"][q], 1)
    return out


if __name__ == "__main__":
    main()
