"""Uploads path: from an upload being published to the item being searchable in Milvus and in a user's list.

    .venv/bin/avrec stack status     # Kafka, Triton, Milvus up
    .venv/bin/python bench/uploads.py --text-items 300 --text-rate 10 --videos 30 --video-rate 1 \
        --burst 200 --json-out bench/results/uploads.json

A real worker (tests/workerproc.py) on its own topics, consumer group and
``bench_``-prefixed Milvus collections, with ``AVREC_ENCODERS__MEDIA_ROOTS`` set to
the MicroLens sample directory. Setup, through the worker itself (nothing is
written to Milvus behind its back):

1. seed uploads: ``--seeds-per-topic`` text items for each of 8 topics (titles
   drawn from the topic's word list) and each MicroLens .mp4 once (its title from
   the titles CSV, audio and video from the file);
2. users with tastes: ``--users-per-topic`` users per topic each like 3 of that
   topic's seed items; ``--video-users`` users like/complete the seed videos; the
   setup waits until every user has a list and the worker has mirrored every
   taste vector into the Milvus ``users`` collection (what the fan-out searches).

Measured per item, from the producer's ``send`` (t_publish):

* ``t_in_milvus``: the first time ``get`` by id on the items collection returns
  it (a poller asks for every still-missing id every ``--poll-ms``);
* ``t_in_list``: the first record on ``recommendations`` whose items include it
  (the upload's fan-out refresh of a close user, or any later list).

Phases: ``text`` (text-only items at a steady ``--text-rate``), ``video`` (the
.mp4s re-uploaded under new item ids at ``--video-rate``, so every one is decoded
and encoded again), ``burst`` (``--burst`` text items sent at once: the path's
capacity in items/s).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
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

from bench.interactions import drop_run_state  # noqa: E402
from bench.pacing import paced  # noqa: E402
from bench.report import emit  # noqa: E402
from streams.vectors.milvus import milvus_client  # noqa: E402
from tests.workerproc import WorkerProcess, worker_env  # noqa: E402

log = logging.getLogger("bench.uploads")

TOPICS = {
    "cooking": "recipe kitchen spicy noodles dumplings soup chef frying garlic sauce homemade dinner baking",
    "football": "goal match striker penalty league stadium midfielder coach dribble tournament keeper",
    "cats": "kitten cat meow purring paws whiskers cute pet fluffy nap litter toy",
    "travel": "beach mountain city trip flight hotel sunset island backpacking tour old town street",
    "fitness": "workout gym squats running cardio muscles training stretch abs yoga routine",
    "gaming": "gameplay boss level console controller speedrun multiplayer quest loot ranked",
    "cars": "engine drift sports car racing turbo garage horsepower exhaust tuning highway",
    "music": "guitar piano song concert singer cover melody drums band chorus live",
}


def title_for(topic: str, rng: np.random.Generator) -> str:
    words = TOPICS[topic].split()
    return " ".join(rng.choice(words, 5, replace=False)) + f" #{topic}"


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


class Watcher:
    """Two threads: one polls Milvus for pending ids, one reads lists; both stamp first-seen times."""

    def __init__(self, settings, poll_s: float) -> None:
        self.settings, self.poll_s = settings, poll_s
        self.client = milvus_client(settings.milvus.model_copy(update={"timeout_s": 60.0}))
        self.pending: set[str] = set()
        self.wanted: set[str] = set()
        self.in_milvus: dict[str, float] = {}
        self.in_list: dict[str, float] = {}
        self.list_users: dict[str, str] = {}
        self.lists_seen_users: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = KafkaConsumer(settings.kafka.topics.recommendations.name,
                                      **settings.kafka.kafka_python_config(), auto_offset_reset="latest",
                                      enable_auto_commit=False, group_id=None)
        self.consumer.poll(timeout_ms=1000)  # assigned and positioned before anything is sent
        self.threads = [threading.Thread(target=self._poll_milvus, daemon=True),
                        threading.Thread(target=self._read_lists, daemon=True)]
        for t in self.threads:
            t.start()

    def expect(self, item_id: str) -> None:
        with self.lock:
            self.pending.add(item_id)
            self.wanted.add(item_id)

    def _poll_milvus(self) -> None:
        name = self.settings.milvus.items_collection
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.pending)[:1024]
            if ids:
                try:
                    rows = self.client.get(name, ids=ids, output_fields=["item_id"])
                except Exception as exc:  # noqa: BLE001 - keep polling (collection may not exist yet)
                    log.warning("poll: %s", exc)
                    rows = []
                now = time.perf_counter()
                with self.lock:
                    for r in rows:
                        self.in_milvus.setdefault(r["item_id"], now)
                        self.pending.discard(r["item_id"])
            time.sleep(self.poll_s)

    def _read_lists(self) -> None:
        while not self.stop.is_set():
            for recs in self.consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in recs:
                    if not r.value:
                        continue
                    rec = orjson.loads(r.value)
                    with self.lock:
                        self.lists_seen_users.add(rec["user_id"])
                        for it in rec["items"]:
                            i = it["item_id"]
                            if i in self.wanted and i not in self.in_list:
                                self.in_list[i] = now
                                self.list_users[i] = rec["user_id"]

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(3)
        self.consumer.close()
        self.client.close()


def send_paced(producer: KafkaProducer, topic: str, uploads: list[dict], rate: float,
               watcher: Watcher) -> dict[str, float]:
    sent: dict[str, float] = {}
    for up in paced(uploads, rate):
        watcher.expect(up["item_id"])
        up["created_at"] = time.time()
        sent[up["item_id"]] = time.perf_counter()
        producer.send(topic, key=up["item_id"].encode(), value=orjson.dumps(up))
    producer.flush(60)
    return sent


def wait_for(cond, timeout: float, worker: WorkerProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not worker.alive():
            raise RuntimeError(f"worker died during {what}:\n{worker.tail()}")
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not done in {timeout}s")


def summarize(sent: dict[str, float], w: Watcher) -> dict:
    with w.lock:
        mil = {i: w.in_milvus[i] - t for i, t in sent.items() if i in w.in_milvus}
        lst = {i: w.in_list[i] - t for i, t in sent.items() if i in w.in_list}
        last_milvus = max((w.in_milvus[i] for i in sent if i in w.in_milvus), default=None)
    first = min(sent.values())
    span = (last_milvus - first) if last_milvus else None
    m, ls = list(mil.values()), list(lst.values())
    return {
        "items": len(sent), "in_milvus": len(m), "in_a_list": len(ls),
        "milvus_p50_ms": pct(m, 50), "milvus_p95_ms": pct(m, 95), "milvus_p99_ms": pct(m, 99),
        "milvus_max_ms": pct(m, 100),
        "list_p50_ms": pct(ls, 50), "list_p95_ms": pct(ls, 95), "list_p99_ms": pct(ls, 99),
        "list_max_ms": pct(ls, 100),
        "items_per_s": round(len(m) / span, 2) if span else None,
        "send_span_s": round(max(sent.values()) - first, 2),
    }


def upload(item_id: str, title: str, topic: str | None = None, media: Path | None = None) -> dict:
    up = {"event_id": str(uuid.uuid4()), "item_id": item_id, "creator_id": f"cr-{item_id}", "title": title,
          "tags": [topic] if topic else [], "created_at": time.time()}
    if media is not None:
        up["video_uri"] = up["audio_uri"] = media.resolve().as_uri()
    return up


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--media-dir", default=None, help="default: <data_dir>/microlens-sample")
    p.add_argument("--seeds-per-topic", type=int, default=5)
    p.add_argument("--users-per-topic", type=int, default=25)
    p.add_argument("--video-users", type=int, default=30)
    p.add_argument("--text-items", type=int, default=300)
    p.add_argument("--text-rate", type=float, default=10.0)
    p.add_argument("--videos", type=int, default=30)
    p.add_argument("--video-rate", type=float, default=1.0)
    p.add_argument("--burst", type=int, default=200, help="text items sent at once (0 = skip)")
    p.add_argument("--poll-ms", type=float, default=50.0)
    p.add_argument("--drain-s", type=float, default=120.0)
    p.add_argument("--phases", default="text,video,burst")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra worker setting, e.g. AVREC_WORKER__FANOUT_USERS=0 (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the Milvus collections")
    p.add_argument("--json-out")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    tag = uuid.uuid4().hex[:8]
    unique = f"benchup{tag}"
    probe_env = worker_env(unique)
    from streams.settings import Settings

    data_dir = Settings().data_dir
    media_dir = Path(args.media_dir) if args.media_dir else data_dir / "microlens-sample"
    mp4s = sorted(media_dir.glob("*.mp4"))
    titles: dict[str, str] = {}
    csvs = sorted(media_dir.glob("*titles*.csv"))
    if csvs:
        with open(csvs[0], newline="", encoding="utf-8") as fh:
            wanted = {m.stem for m in mp4s}
            for row in csv.DictReader(fh):
                if row["item"] in wanted:
                    titles[row["item"]] = row["title"][:1000]
    env = {**probe_env, "AVREC_LOG_LEVEL": "INFO", "AVREC_WORKER__STATS_EVERY_S": "10",
           "AVREC_MILVUS__ITEMS_COLLECTION": f"bench_up_items_{tag}",
           "AVREC_MILVUS__USERS_COLLECTION": f"bench_up_users_{tag}",
           "AVREC_ENCODERS__MEDIA_ROOTS": json.dumps([str(media_dir.resolve())]),
           **dict(kv.split("=", 1) for kv in args.worker_env)}
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(env, log_dir / "worker-uploads.log")
    s = worker.settings
    result: dict = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0], "media": [m.name for m in mp4s],
                    "fanout_users": s.worker.fanout_users, "fanout_min_similarity": s.worker.fanout_min_similarity,
                    "upload_batch": s.worker.upload_batch, "poll_ms": args.poll_ms,
                    "worker_env": args.worker_env}
    producer = watcher = None
    try:
        worker.start()
        watcher = Watcher(s, args.poll_ms / 1000)
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks=1, linger_ms=1)
        up_topic, int_topic = s.kafka.topics.uploads.name, s.kafka.topics.interactions.name

        # 1. seeds
        t0 = time.perf_counter()
        seeds: dict[str, list[str]] = {t: [] for t in TOPICS}
        seed_ups = []
        for t in TOPICS:
            for k in range(args.seeds_per_topic):
                seeds[t].append(f"seed-{t}-{k}")
                seed_ups.append(upload(f"seed-{t}-{k}", title_for(t, rng), t))
        seed_videos = [f"seedvid-{m.stem}" for m in mp4s]
        seed_ups += [upload(v, titles.get(m.stem, f"MicroLens {m.stem}"), None, m) for v, m in zip(seed_videos, mp4s)]
        send_paced(producer, up_topic, seed_ups, 0, watcher)
        wait_for(lambda: all(u["item_id"] in watcher.in_milvus for u in seed_ups), 300, worker, "seed uploads")
        result["setup_seed_s"] = round(time.perf_counter() - t0, 1)

        # 2. users with tastes
        t0 = time.perf_counter()
        users: list[str] = []
        now = time.time()
        for t in TOPICS:
            for j in range(args.users_per_topic):
                u = f"u-{t}-{j}"
                users.append(u)
                for n, it in enumerate(rng.choice(seeds[t], min(3, len(seeds[t])), replace=False)):
                    producer.send(int_topic, key=u.encode(), value=orjson.dumps(
                        {"event_id": str(uuid.uuid4()), "user_id": u, "item_id": str(it), "type": "like",
                         "ts": now - 60 + n}))
        for j in range(args.video_users if seed_videos else 0):
            u = f"u-video-{j}"
            users.append(u)
            for n, it in enumerate(seed_videos):
                producer.send(int_topic, key=u.encode(), value=orjson.dumps(
                    {"event_id": str(uuid.uuid4()), "user_id": u, "item_id": it, "type": "complete",
                     "ts": now - 60 + n}))
        producer.flush(60)
        wait_for(lambda: all(u in watcher.lists_seen_users for u in users), 300, worker, "user lists")
        # The watcher's own client: pymilvus shares one connection between clients of the same
        # URI, so closing a second client here would break the watcher's polling.
        mclient = watcher.client

        def mirrored() -> bool:
            try:
                n = mclient.query(s.milvus.users_collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
            except Exception:  # noqa: BLE001 - not created yet
                return False
            return n >= len(users)

        wait_for(mirrored, 120, worker, "user vectors mirrored")
        result["setup_users"] = len(users)
        result["setup_users_s"] = round(time.perf_counter() - t0, 1)
        time.sleep(3)

        def phase(name: str, ups: list[dict], rate: float) -> dict:
            sent = send_paced(producer, up_topic, ups, rate, watcher)
            deadline = time.monotonic() + args.drain_s
            while time.monotonic() < deadline and worker.alive():
                with watcher.lock:
                    # Without fan-out nothing puts a new item into a list: wait for Milvus only.
                    done = all(i in watcher.in_milvus and (i in watcher.in_list or not s.worker.fanout_users)
                               for i in sent)
                if done:
                    break
                time.sleep(0.2)
            out = {"offered_rate": rate, **summarize(sent, watcher)}
            log.warning("%s: %s", name, out)
            time.sleep(2)
            return out

        # 3. text-only, steady rate
        topics = list(TOPICS)
        text = [upload(f"txt-{tag}-{k}", title_for(t, rng), t)
                for k, t in enumerate(rng.choice(topics, args.text_items))]
        if "text" in args.phases:
            result["text"] = phase("text", text, args.text_rate)
        # 4. videos: the same .mp4s under new ids (decoded and encoded every time)
        if mp4s and args.videos and "video" in args.phases:
            vids = []
            for k in range(args.videos):
                m = mp4s[k % len(mp4s)]
                vids.append(upload(f"vid-{tag}-{k}", titles.get(m.stem, f"MicroLens {m.stem}"), None, m))
            result["video"] = phase("video", vids, args.video_rate)
        # 5. burst: capacity
        if args.burst and "burst" in args.phases:
            burst = [upload(f"burst-{tag}-{k}", title_for(t, rng), t)
                     for k, t in enumerate(rng.choice(topics, args.burst))]
            result["burst"] = phase("burst", burst, 0)
    finally:
        if producer is not None:
            producer.close()
        if watcher is not None:
            watcher.close()
        worker.stop()
        if not args.keep:
            worker.drop_collections()
            drop_run_state(worker)
    result["loadavg_end"] = os.getloadavg()[0]
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
