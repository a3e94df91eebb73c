"""Interactions path, end to end: sustained events/s and latency from send to the refreshed list.

    make stack-up
    .venv/bin/python bench/interactions.py --items 100000 --users 10000 --events 20000 --rate 2000 \
        --json-out bench/results/interactions.json

Three modes, measured one after the other in one run, on the same catalogue:

* **optimised**: the worker as shipped (batched ``take_events``, one Milvus search
  with nq = users in the batch, item cache, vectorised scoring);
* **naive**: the same code with batching and caches switched off by settings
  (one event at a time, one Milvus search per event, every item fetched from Milvus);
* **floor**: the same Kafka produce -> consume loop with no processing at all.

Latency is from the producer's ``send`` of an interaction to the consumer's receipt
of the list whose ``source_event_id`` is that interaction. The catalogue holds
synthetic unit vectors (clustered), inserted straight into Milvus.
"""

from __future__ import annotations

import argparse
import json
import logging
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

from streams.kafka.admin import ensure_topics  # noqa: E402
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
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            for recs in self.consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in recs:
                    key = self.id_of(r.value)
                    if key is not None:
                        self.received.setdefault(key, now)


def drive(producer: KafkaProducer, topic: str, events: list[dict], rate: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    for k, e in enumerate(events):
        if rate > 0:
            due = t0 + k / rate
            while (d := due - time.perf_counter()) > 0:
                time.sleep(min(d, 0.002))
        sent[e["event_id"]] = time.perf_counter()
        producer.send(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
    producer.flush(60)
    return sent


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


def summarize(sent: dict[str, float], received: dict[str, float], wall: float) -> dict:
    lat = np.array([received[i] - sent[i] for i in sent if i in received]) * 1000
    done = len(lat)
    return {
        "events": len(sent), "completed": done,
        "events_per_s": round(done / wall, 1) if wall > 0 else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if done else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if done else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if done else None,
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
    t0 = time.perf_counter()
    sent = drive(producer, produce_topic, events, rate)
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline and keep_going():
        done = answered_at(events, dict(rx.received))
        if len(done) >= len(sent):
            break
        time.sleep(0.2)
    rx.stop_flag = True
    rx.join(2)
    producer.close()
    consumer.close()
    done = answered_at(events, rx.received)
    wall = max(done.values(), default=t0) - t0
    return summarize(sent, done, wall)


def run_worker_mode(name: str, env_extra: dict, args, log_dir: Path, base_env: dict, rng) -> dict:
    w = WorkerProcess({**base_env, **env_extra}, log_dir / f"worker-{name}.log")
    w.start()
    s = w.settings
    try:
        n = args.events if name == "optimised" else args.naive_events
        events = make_events(n, args.users, args.items, rng, f"{name}-{uuid.uuid4().hex[:6]}")
        out = measure(s.kafka, s.kafka.topics.interactions.name, s.kafka.topics.recommendations.name,
                      lambda v: orjson.loads(v)["source_event_id"] if v else None,
                      events, args.rate, args.drain_s, keep_going=w.alive)
        out["worker_alive"] = w.alive()
        return out
    finally:
        w.stop()


def run_floor(args, rng) -> dict:
    """The physical floor: produce -> consume through Kafka, nothing in between."""
    from streams.settings import Settings

    kafka = Settings().kafka
    topic = f"floor-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(name=topic, partitions=8)])
    events = make_events(args.events, args.users, args.items, rng, "floor")
    return measure(kafka, topic, topic, lambda v: orjson.loads(v)["event_id"], events, args.rate, args.drain_s)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--naive-events", type=int, default=3_000)
    p.add_argument("--rate", type=float, default=2000.0, help="offered events/s (0 = as fast as possible)")
    p.add_argument("--drain-s", type=float, default=120.0)
    p.add_argument("--modes", default="floor,optimised,naive")
    p.add_argument("--json-out")
    p.add_argument("--catalogue", help="Milvus items collection to use; loaded only if missing "
                                        "(kept afterwards, so reruns skip the load)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    unique = "bench" + uuid.uuid4().hex[:8]
    base_env = worker_env(unique, {"AVREC_LOG_LEVEL": "INFO", "AVREC_WORKER__STATS_EVERY_S": "5"})
    if args.catalogue:
        base_env["AVREC_MILVUS__ITEMS_COLLECTION"] = args.catalogue
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    probe = WorkerProcess(base_env, log_dir / "probe.log")
    result: dict = {"items": args.items, "users": args.users, "offered_rate": args.rate}
    result["catalogue_load_s"] = round(load_catalogue(probe.settings, args.items, rng, reuse=bool(args.catalogue)), 1)
    modes = args.modes.split(",")
    if "floor" in modes:
        result["floor"] = run_floor(args, rng)
    if "optimised" in modes:
        result["optimised"] = run_worker_mode("optimised", {}, args, log_dir, base_env, rng)
    if "naive" in modes:
        naive_env = {"AVREC_WORKER__INTERACTION_BATCH": "1", "AVREC_WORKER__ITEM_CACHE_SIZE": "0",
                     "AVREC_APP_ID": f"avrec-{unique}-naive", "AVREC_KAFKA__TOPIC_PREFIX": f"{unique}n-"}
        result["naive"] = run_worker_mode("naive", naive_env, args, log_dir, base_env, rng)
    o, n, f = result.get("optimised"), result.get("naive"), result.get("floor")
    if o and n and o["events_per_s"] and n["events_per_s"]:
        result["optimised_over_naive_throughput"] = round(o["events_per_s"] / n["events_per_s"], 2)
    if o and f and o["p50_ms"] is not None and f["p50_ms"] is not None:
        result["optimised_minus_floor_p50_ms"] = round(o["p50_ms"] - f["p50_ms"], 1)
        result["optimised_minus_floor_p99_ms"] = round(o["p99_ms"] - f["p99_ms"], 1)
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text)
    sys.stdout.write(text + "\n")
    if args.catalogue:
        # Keep the catalogue for the next run; drop only the per-run users collection.
        client = milvus_client(probe.settings.milvus)
        client.drop_collection(probe.settings.milvus.users_collection)
        client.close()
    else:
        probe.drop_collections()


if __name__ == "__main__":
    main()
