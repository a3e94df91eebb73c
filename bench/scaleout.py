"""Scale-out: the same real log through 1, 2 and 3 workers in one consumer group.

    make stack-up
    .venv/bin/python bench/scaleout.py --dataset ../shared/data/ml-100k --events 20000 --workers 1,2,3 \
        --json-out bench/results/scaleout.json

For each worker count, on fresh state (own app id, topics, Milvus ``users``; one
shared items collection): the first ``--events`` MovieLens-100k interactions in
time order (real users: 943 of them, 20-737 ratings each, so warm users have
long histories), keyed by user, produced as fast as the broker takes them. It
measures, once every record's offset is committed by the group:

* events/s from the first send to the last commit;
* CPU ms per event of every process on the path (each worker, Kafka, Milvus,
  Triton and this generator), from ``/proc`` (``bench/cpu_meter.py``);
* Kafka records and payload bytes (key + value) produced per interaction, per
  topic: the input topic itself, the lists, the changelogs and avrec's internal
  topics; and the bytes the broker wrote to disk for them (its log segments,
  batch headers included).

A 2-core machine cannot show a linear speed-up (the workers share the cores
with the broker and Milvus); what it shows is whether the CPU per event stays
flat as workers are added, i.e. whether N machines would each carry 1/N.

Items are written straight into Milvus (random unit vectors, one collection
reused across runs), so Triton is idle here: this measures the interactions path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_meter import CpuMeter, stack_pids  # noqa: E402
from bench.interactions import drop_run_state  # noqa: E402
from bench.report import emit  # noqa: E402
from streams.settings import Settings  # noqa: E402
from tests.workerproc import WorkerProcess, worker_env  # noqa: E402

log = logging.getLogger("bench.scaleout")
DIM = 384


def movielens_log(path: Path, limit: int) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """(item ids, the first ``limit`` interactions as (key, value)) in time order."""
    from streams.replay import open_replay

    items: list[str] = []
    out: list[tuple[bytes, bytes]] = []
    for _, kind, key, value in open_replay(path).timed():
        if kind == "uploads":
            items.append(key.decode())
        elif len(out) < limit:
            out.append((key, value))
    return items, out


def load_items(settings: Settings, item_ids: list[str]) -> None:
    from streams.vectors.collections import ItemCollection
    from streams.vectors.milvus import milvus_client

    client = milvus_client(settings.milvus.model_copy(update={"timeout_s": 600.0}))
    try:
        coll = ItemCollection(client, settings.milvus.items_collection, DIM)
        # Loaded already (a rerun): the first and last of them are there. The collection may
        # hold other items too (bench/realistic.py adds these to a 100k-item catalogue).
        if client.has_collection(coll.name) and len(coll.get([item_ids[0], item_ids[-1]])) == 2:
            return
        coll.ensure()
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((len(item_ids), DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        zeros = [0.0] * DIM
        created = int((time.time() - 30 * 86400) * 1000)
        coll.upsert([{"item_id": iid, "vector": v.tolist(), "text_vec": v.tolist(), "audio_vec": zeros,
                      "video_vec": zeros, "creator_id": "movielens", "title": iid, "tags": "",
                      "created_at": created, "available": True, "modalities": "text", "duration_s": 0.0}
                     for iid, v in zip(item_ids, vecs)])
    finally:
        client.close()


def committed_total(settings: Settings, group: str, topic: str, partitions: int) -> int:
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(**settings.kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        return sum(probe.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    finally:
        probe.close()


def topic_volumes(settings: Settings, names: list[str]) -> dict[str, dict[str, int]]:
    """Records and key+value bytes in each topic (read back from the beginning), and its bytes on disk."""
    from kafka import KafkaConsumer, TopicPartition

    disk = settings.stack.state_dir / "kafka" / "data"
    out: dict[str, dict[str, int]] = {}
    consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), enable_auto_commit=False,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        for name in names:
            parts = consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in sorted(parts)]
            records = payload = 0
            if tps:
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                end = consumer.end_offsets(tps)
                while any(consumer.position(tp) < end[tp] for tp in tps):
                    for recs in consumer.poll(timeout_ms=500, max_records=20_000).values():
                        for r in recs:
                            records += 1
                            payload += len(r.key or b"") + len(r.value or b"")
            on_disk = sum(f.stat().st_size for p in parts for f in (disk / f"{name}-{p}").glob("*.log"))
            out[name] = {"records": records, "payload_bytes": payload, "disk_bytes": on_disk}
    finally:
        consumer.close()
    return out


def replica_cost(settings: Settings, n_events: int) -> dict | None:
    """CPU ms per interaction that every worker's replica spends applying the run's item-deltas log
    (the part of a worker's cost that grows with the whole cluster's event rate, not its own share)."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.items.store import ItemStore

    topic = f"{settings.app_id}-item-deltas"
    consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), enable_auto_commit=False,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            return None  # a worker without the item-state log (the code before it)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for tp, recs in consumer.poll(timeout_ms=500, max_records=20_000).items():
                records.extend((tp.partition, r.offset, r.value) for r in recs)
    finally:
        consumer.close()
    store = ItemStore(settings.ranking, settings.kafka.item_partitions)
    t0 = time.process_time()
    for p, off, value in records:
        store.apply(p, off, value)
    cpu = time.process_time() - t0
    return {"records": len(records), "ops": store.ops_applied + store.ops_skipped,
            "cpu_ms_per_interaction": round(cpu * 1e3 / max(1, n_events), 4)}


def run(n_workers: int, records: list[tuple[bytes, bytes]], base_env: dict, log_dir: Path, tag: str,
        timeout_s: float) -> dict:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    unique = f"{tag}w{n_workers}"
    env = worker_env(unique, {**base_env, "AVREC_APP_ID": f"avrec-{unique}"})
    workers = []
    for k in range(n_workers):
        extra = {"AVREC_WORKER__REPLICA": str(k)} if n_workers > 1 else {}
        workers.append(WorkerProcess({**env, **extra}, log_dir / f"scaleout-{unique}-{k}.log"))
    s = workers[0].settings
    try:
        for w in workers:
            w.start(timeout=180)
        time.sleep(max(5.0, 5.0 * n_workers))  # the group settles after the last join (rebalance)
        meter = CpuMeter({**{f"worker{k}": w.proc.pid for k, w in enumerate(workers)}, "generator": os.getpid(),
                          **stack_pids(s)})
        meter.start()
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all", linger_ms=5)
        topic = s.kafka.topics.interactions.name
        t0 = time.perf_counter()
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(120)
        producer.close()
        sent_s = time.perf_counter() - t0
        deadline = time.monotonic() + timeout_s
        parts = s.kafka.topics.interactions.partitions
        while (done := committed_total(s, s.app_id, topic, parts)) < len(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n_workers} workers: {done} of {len(records)} committed in {timeout_s:.0f} s")
            dead = [k for k, w in enumerate(workers) if not w.alive()]
            if dead:
                raise RuntimeError(f"worker {dead[0]} died:\n{workers[dead[0]].tail()}")
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        cpu = meter.per_event(len(records), tuple(meter.procs))
        ms = cpu["cpu_ms_per_event"]
        worker_ms = sum(v for n, v in ms.items() if n.startswith("worker"))
        admin = KafkaAdminClient(**s.kafka.kafka_python_config())
        names = sorted(t for t in admin.list_topics() if t.startswith(s.kafka.topic_prefix)
                       or t.startswith(f"{s.app_id}-"))
        admin.close()
        vol = topic_volumes(s, names)
        replica = replica_cost(s, len(records))
        n = len(records)
        per_topic = {t.removeprefix(s.kafka.topic_prefix).removeprefix(f"{s.app_id}-"): {
            "records_per_interaction": round(v["records"] / n, 3),
            "payload_bytes_per_interaction": round(v["payload_bytes"] / n, 1),
            "disk_bytes_per_interaction": round(v["disk_bytes"] / n, 1)} for t, v in vol.items()}
        produced = {k: v for k, v in per_topic.items() if k != "interactions"}  # what the workers wrote
        return {
            "workers": n_workers, "events": n, "send_s": round(sent_s, 2), "wall_s": round(wall, 2),
            "events_per_s": round(n / wall, 1),
            "cpu_ms_per_event": ms, "workers_cpu_ms_per_event": round(worker_ms, 3),
            "all_cpu_ms_per_event": round(sum(ms.values()), 3),
            "replica_apply": replica,
            "topics": per_topic,
            "produced_by_workers": {
                "records_per_interaction": round(sum(v["records_per_interaction"] for v in produced.values()), 3),
                "payload_bytes_per_interaction": round(sum(v["payload_bytes_per_interaction"]
                                                           for v in produced.values()), 1),
                "disk_bytes_per_interaction": round(sum(v["disk_bytes_per_interaction"]
                                                        for v in produced.values()), 1)},
        }
    finally:
        for w in workers:
            w.stop()
        drop_run_state(*workers)
        try:
            from streams.vectors.milvus import milvus_client

            client = milvus_client(s.milvus)
            if client.has_collection(s.milvus.users_collection):
                client.drop_collection(s.milvus.users_collection)
            client.close()
        except Exception as exc:  # noqa: BLE001 - clean-up only
            log.warning("clean-up failed: %s", exc)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--workers", default="1,2,3", help="comma-separated worker counts, one run each")
    p.add_argument("--items-collection", default="bench_scaleout_ml100k")
    p.add_argument("--timeout-s", type=float, default=900.0)
    p.add_argument("--json-out")
    args = p.parse_args()
    items, records = movielens_log(args.dataset, args.events)
    tag = "so" + uuid.uuid4().hex[:6]
    base_env = {"AVREC_MILVUS__ITEMS_COLLECTION": args.items_collection, "AVREC_WORKER__STATS_EVERY_S": "10",
                "AVREC_WORKER__FANOUT_USERS": "0"}
    probe = WorkerProcess(worker_env(tag, base_env), ROOT / "bench" / "results" / "logs" / "probe.log")
    load_items(probe.settings, items)
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    users = defaultdict(int)
    for key, _ in records:
        users[key] += 1
    result = {"dataset": str(args.dataset), "events": len(records), "users": len(users),
              "events_per_user_p50_p90_max": [int(np.percentile(list(users.values()), q)) for q in (50, 90, 100)],
              "items": len(items), "cores": os.cpu_count(), "runs": []}
    for n in (int(x) for x in args.workers.split(",")):
        result["runs"].append(run(n, records, base_env, log_dir, tag, args.timeout_s))
        sys.stderr.write(json.dumps(result["runs"][-1]) + "\n")
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
