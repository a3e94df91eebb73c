"""Memory: user-state size per user, worker RSS and RocksDB size per 100k users, extrapolated to 10M.

    .venv/bin/avrec stack status     # Kafka, Triton, Milvus up (the worker part needs Kafka + Milvus)
    .venv/bin/python bench/memory.py --users 10000 --json-out bench/results/memory.json
    .venv/bin/python bench/memory.py --part core        # only (a), no stack needed

Two parts:

* **core** (a): the serialised user state exactly as the worker stores it
  (``UserState.to_dict()`` -> orjson, the table's JSON codec; key = the JSON user
  id), for users with 1 ... 5,000 events, built with the pure
  ``ingest_interaction`` and the default ``RankingSettings`` (which bound the
  record: dedupe window 512 event ids, history 50, seen 5,000). Event ids are
  UUIDs, item ids ``it<0..1M>``; the event mix is the interactions bench's.
* **worker** (b): a real worker (tests/workerproc.py) on its own topics, group and
  ``bench_``-prefixed Milvus collections, with a small catalogue loaded straight
  into Milvus. A warm-up step (``--warmup-users``) fills the item cache and the
  worker's fixed structures first; then users are added in ``--steps`` steps of
  new users, ``--events-per-user`` interactions each. After each step, once every
  new user's list has come back: worker VmRSS/VmHWM (/proc/<pid>/status), the
  size of the worker's table directory (RocksDB, all tables), the Kafka changelog
  of ``user-state`` on disk, and rows in the Milvus ``users`` mirror. Per-user
  costs are the least-squares slopes over the steps after the warm-up.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from streams.ranking import RankingSettings, UserState, ingest_interaction, new_cooccurrence, new_trending  # noqa: E402

log = logging.getLogger("bench.memory")
DIM = 384
TYPES = ["view", "like", "complete", "skip", "share"]
TYPE_P = [0.5, 0.2, 0.15, 0.1, 0.05]


# -- (a) the serialised state -------------------------------------------------------------
def state_with(n_events: int, rng: np.random.Generator, cfg: RankingSettings) -> UserState:
    s = UserState()
    cooc, trending = new_cooccurrence(cfg), new_trending(cfg)
    t0 = time.time() - n_events * 60
    types = rng.choice(TYPES, n_events, p=TYPE_P)
    items = rng.integers(0, 1_000_000, n_events)
    for k in range(n_events):
        v = rng.standard_normal(DIM).astype(np.float32)
        ingest_interaction(s, str(uuid.uuid4()), f"it{items[k]}", v / np.linalg.norm(v), str(types[k]),
                           float(rng.uniform(0.1, 1.0)), t0 + 60 * k, cfg, cooc=cooc, trending=trending)
    return s


def core_sizes(lengths: list[int], rng: np.random.Generator) -> list[dict]:
    cfg = RankingSettings()
    out = []
    for n in lengths:
        s = state_with(n, rng, cfg)
        d = s.to_dict()
        value = orjson.dumps(d)
        key = orjson.dumps(f"u{rng.integers(0, 10_000_000)}")
        parts = {f: len(orjson.dumps(d[f])) for f in ("sum_vec", "recent_event_ids", "history", "seen", "hidden")}
        out.append({"events": n, "value_bytes": len(value), "key_bytes": len(key), "parts_bytes": parts,
                    "recent_event_ids": len(s.recent_event_ids), "history": len(s.history), "seen": len(s.seen),
                    "hidden": len(s.hidden)})
        log.warning("core: %d events -> %d bytes", n, len(value))
    return out


# -- (b) a real worker ----------------------------------------------------------------------
def proc_mem(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def dir_bytes(path: Path, match: str | None = None) -> dict:
    apparent = allocated = 0
    if path.exists():
        for root, _, files in os.walk(path):
            if match and match not in root:
                continue
            for f in files:
                try:
                    st = os.stat(os.path.join(root, f))
                except OSError:
                    continue
                apparent += st.st_size
                allocated += st.st_blocks * 512
    return {"apparent": apparent, "allocated": allocated}


def kafka_dir(settings) -> Path:
    props = settings.stack.state_dir / "kafka" / "server.properties"
    for line in props.read_text().splitlines():
        if line.startswith("log.dirs="):
            return Path(line.split("=", 1)[1].split(",")[0])
    return settings.stack.state_dir / "kafka" / "data"


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    a, b = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def worker_part(args, rng: np.random.Generator) -> dict:
    from kafka import KafkaConsumer, KafkaProducer

    from bench.interactions import drop_run_state
    from streams.vectors.collections import ItemCollection
    from streams.vectors.milvus import milvus_client
    from tests.workerproc import WorkerProcess, worker_env

    tag = uuid.uuid4().hex[:8]
    unique = f"benchmem{tag}"
    env = worker_env(unique, {"AVREC_LOG_LEVEL": "INFO", "AVREC_WORKER__STATS_EVERY_S": "10",
                              "AVREC_MILVUS__ITEMS_COLLECTION": f"bench_mem_items_{tag}",
                              "AVREC_MILVUS__USERS_COLLECTION": f"bench_mem_users_{tag}"})
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    w = WorkerProcess(env, log_dir / "worker-memory.log")
    s = w.settings
    client = milvus_client(s.milvus.model_copy(update={"timeout_s": 600.0}))
    items = ItemCollection(client, s.milvus.items_collection, DIM)
    items.ensure()
    zeros = [0.0] * DIM
    centers = rng.standard_normal((50, DIM)).astype(np.float32)
    vecs = centers[rng.integers(0, 50, args.items)] + 0.6 * rng.standard_normal((args.items, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    now_ms = int(time.time() * 1000)
    rows = [{"item_id": f"it{i}", "vector": vecs[i].tolist(), "text_vec": vecs[i].tolist(), "audio_vec": zeros,
             "video_vec": zeros, "creator_id": f"cr{i % 500}", "title": f"item {i}", "tags": "",
             "created_at": now_ms - 86400_000, "available": True, "modalities": "text", "duration_s": 30.0}
            for i in range(args.items)]
    items.upsert(rows)
    result: dict = {"catalogue_items": args.items, "events_per_user": args.events_per_user, "steps": []}
    datadir = s.stack.state_dir / "faust" / s.app_id
    kdir = kafka_dir(s)
    changelog = f"{s.app_id}-user-state-changelog"
    recs_topic = s.kafka.topics.recommendations.name
    try:
        w.start()
        pid = w.proc.pid
        result["worker_pid_start_mem_mib"] = proc_mem(pid)
        consumer = KafkaConsumer(recs_topic, **s.kafka.kafka_python_config(), auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None)
        seen_users: set[str] = set()
        rec_bytes: list[int] = []
        stop = threading.Event()

        def rx() -> None:
            while not stop.is_set():
                for recs in consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        if r.value:
                            seen_users.add(r.key.decode())
                            rec_bytes.append(len(r.value))

        t = threading.Thread(target=rx, daemon=True)
        t.start()
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks=1, linger_ms=5)
        topic = s.kafka.topics.interactions.name
        plan = [("warmup", args.warmup_users)] + [(f"step{k + 1}", args.users // args.steps)
                                                  for k in range(args.steps)]
        total = 0
        for name, n_new in plan:
            users = [f"u{total + j}" for j in range(n_new)]
            total += n_new
            t0 = time.perf_counter()
            ts0 = time.time() - 3600
            for e in range(args.events_per_user):
                its = rng.integers(0, args.items, n_new)
                types = rng.choice(TYPES, n_new, p=TYPE_P)
                for j, u in enumerate(users):
                    ev = {"event_id": str(uuid.uuid4()), "user_id": u, "item_id": f"it{its[j]}",
                          "type": str(types[j]), "watch_ms": int(rng.integers(1000, 30000)), "ts": ts0 + e}
                    producer.send(topic, key=u.encode(), value=orjson.dumps(ev))
            producer.flush(120)
            deadline = time.monotonic() + args.step_timeout_s
            while time.monotonic() < deadline and not all(u in seen_users for u in users):
                if not w.alive():
                    raise RuntimeError(f"worker died:\n{w.tail()}")
                time.sleep(0.5)
            took = time.perf_counter() - t0
            time.sleep(args.settle_s)  # let the mirror and RocksDB settle before measuring
            try:
                mirrored = client.query(s.milvus.users_collection, filter="",
                                        output_fields=["count(*)"])[0]["count(*)"]
            except Exception:  # noqa: BLE001 - informational
                mirrored = None
            step = {"step": name, "users_total": total, "answered": sum(u in seen_users for u in users),
                    "new_users": n_new, "events": n_new * args.events_per_user, "took_s": round(took, 1),
                    "events_per_s": round(n_new * args.events_per_user / took, 1),
                    **{k.lower() + "_mib": v for k, v in proc_mem(pid).items()},
                    "rocksdb_dir_bytes": dir_bytes(datadir),
                    "rocksdb_user_state_bytes": dir_bytes(datadir, "user-state"),
                    "changelog_bytes": dir_bytes(kdir, changelog),
                    "milvus_users_rows": mirrored}
            result["steps"].append(step)
            log.warning("%s", step)
        stop.set()
        t.join(2)
        producer.close()
        consumer.close()
        result["recommendation_record_bytes_mean"] = round(float(np.mean(rec_bytes)), 1) if rec_bytes else None
        meas = result["steps"][1:]
        xs = [m["users_total"] for m in meas]
        if len(xs) >= 2:
            per = {}
            for label, ys in {
                "rss_bytes": [m["vmrss_mib"] * 2**20 for m in meas],
                "rocksdb_allocated_bytes": [m["rocksdb_dir_bytes"]["allocated"] for m in meas],
                "rocksdb_apparent_bytes": [m["rocksdb_dir_bytes"]["apparent"] for m in meas],
                "rocksdb_user_state_apparent_bytes": [m["rocksdb_user_state_bytes"]["apparent"] for m in meas],
                "changelog_allocated_bytes": [m["changelog_bytes"]["allocated"] for m in meas],
            }.items():
                slope, icpt = fit(xs, ys)
                per[label] = {"per_user": round(slope, 1), "intercept": round(icpt), "per_100k_mib": round(
                    slope * 100_000 / 2**20, 1)}
            result["fit"] = per
    finally:
        w.stop()
        client.close()
        if not args.keep:
            w.drop_collections()
            drop_run_state(w)
    return result


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="core,worker")
    p.add_argument("--lengths", default="1,10,50,200,512,1000,5000", help="events per user for (a)")
    p.add_argument("--items", type=int, default=5000, help="catalogue for (b)")
    p.add_argument("--users", type=int, default=10_000, help="users added after the warm-up in (b)")
    p.add_argument("--warmup-users", type=int, default=1000)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--events-per-user", type=int, default=1)
    p.add_argument("--step-timeout-s", type=float, default=600)
    p.add_argument("--settle-s", type=float, default=5)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json-out")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    result: dict = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
    parts = args.part.split(",")
    if "core" in parts:
        result["core"] = core_sizes([int(x) for x in args.lengths.split(",")], rng)
    if "worker" in parts:
        result["worker"] = worker_part(args, rng)
    result["loadavg_end"] = os.getloadavg()[0]
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
