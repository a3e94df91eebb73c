"""Rebalance: from ``kill -9`` of one of two workers to its partitions serving fresh lists again.

    make stack-up
    .venv/bin/python bench/rebalance.py --users 20000 --standby 0,1 --json-out bench/results/rebalance.json

For each standby setting (``AVREC_WORKER__STANDBY_REPLICAS``), on fresh state:

1. two workers in one group (replicas 0 and 1); ``--users`` users get one
   interaction each (about 2.3 KB of user state each, docs/PERFORMANCE.md
   "Memory per 100k users"), and everything is committed;
2. worker 1 is killed with SIGKILL;
3. from then on, every 0.25 s, one probe interaction goes to every
   ``interactions`` partition that has not answered yet (a user of that
   partition), and the time of the first list for a probe is recorded.

Time to serve again, per partition = first list for a probe sent after the kill
minus the kill. It has three parts: the group noticing the death (the session
timeout, ``AVREC_WORKER__SESSION_TIMEOUT_S``, 10 s), the rebalance, and the new
owner reading the moved partitions' user-state changelog (all of it without a
standby copy, only its tail with one). The survivor's own log gives the last two
(from its "Revoking" to its "Worker ready"). Per 100k users: the changelog part
scales with the bytes to read (measured here from the broker's log segments).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interactions import drop_run_state  # noqa: E402
from bench.report import emit  # noqa: E402
from bench.scaleout import committed_total, load_items  # noqa: E402
from streams.items.partitioning import partition_for  # noqa: E402
from streams.kafka.admin import wait_group_stable  # noqa: E402
from tests.workerproc import WorkerProcess, worker_env  # noqa: E402

ITEMS = [f"rb{i}" for i in range(500)]


def _log_time(line: str) -> float | None:
    m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def survivor_phases(log_text: str, killed_at: float) -> dict:
    """From the survivor's log: when the rebalance started and when it was ready again, after the kill."""
    revoke = ready = None
    for line in log_text.splitlines():
        t = _log_time(line)
        if t is None or t < killed_at - 1:
            continue
        if revoke is None and "Revoking previously assigned partitions" in line:
            revoke = t
        if revoke is not None and "[^---Recovery]: Worker ready" in line:
            ready = t
            break
    return {"detected_s": None if revoke is None else round(revoke - killed_at, 2),
            "rebalance_and_recovery_s": None if revoke is None or ready is None else round(ready - revoke, 2)}


def run(standby: int, users: int, base_env: dict, log_dir: Path, tag: str, timeout_s: float) -> dict:
    from kafka import KafkaConsumer, KafkaProducer

    unique = f"{tag}s{standby}"
    env = worker_env(unique, {**base_env, "AVREC_WORKER__STANDBY_REPLICAS": str(standby)})
    workers = [WorkerProcess({**env, "AVREC_WORKER__REPLICA": str(k)}, log_dir / f"rebalance-{unique}-{k}.log")
               for k in range(2)]
    s = workers[0].settings
    topic = s.kafka.topics.interactions.name
    parts = s.kafka.topics.interactions.partitions
    try:
        for w in workers:
            w.start(timeout=180)
        wait_group_stable(s.kafka, s.app_id, 2, 180)
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all", linger_ms=5)
        now = time.time()
        probe_user: dict[int, str] = {}
        for u in range(users):
            uid = f"u{u}"
            probe_user.setdefault(partition_for(uid.encode(), parts), uid)
            ev = {"event_id": f"{uid}-0", "user_id": uid, "item_id": ITEMS[u % len(ITEMS)], "type": "like",
                  "ts": now - 3600 + u * 1e-3}
            producer.send(topic, key=uid.encode(), value=orjson.dumps(ev))
        producer.flush(120)
        deadline = time.monotonic() + timeout_s
        while committed_total(s, s.app_id, topic, parts) < users:
            if time.monotonic() > deadline:
                raise TimeoutError("the users' events were not all committed")
            time.sleep(1)
        time.sleep(5)  # standbys (if any) read the changelog's tail
        state_dir = s.stack.state_dir / "kafka" / "data"
        changelog = f"{s.app_id}-user-state-changelog"
        changelog_bytes = sum(f.stat().st_size for p in range(parts) for f in (state_dir / f"{changelog}-{p}").glob("*.log"))

        lists = KafkaConsumer(s.kafka.topics.recommendations.name, **s.kafka.kafka_python_config(),
                              auto_offset_reset="latest", enable_auto_commit=False)
        lists.poll(timeout_ms=1000)
        served: dict[int, float] = {}
        probes: dict[str, int] = {}  # probe event id -> partition
        stop = threading.Event()

        def receive() -> None:
            while not stop.is_set():
                for recs in lists.poll(timeout_ms=100).values():
                    t = time.time()
                    for r in recs:
                        if r.value and (p := probes.get(orjson.loads(r.value)["source_event_id"])) is not None:
                            served.setdefault(p, t)

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        killed_at = time.time()
        workers[1].kill9()
        n = 0
        while len(served) < parts and time.time() - killed_at < timeout_s:
            for p, uid in probe_user.items():
                if p not in served:
                    n += 1
                    eid = f"{uid}-probe-{n}"
                    probes[eid] = p
                    ev = {"event_id": eid, "user_id": uid, "item_id": ITEMS[n % len(ITEMS)], "type": "view",
                          "ts": time.time()}
                    producer.send(topic, key=uid.encode(), value=orjson.dumps(ev))
            producer.flush(10)
            time.sleep(0.25)
        stop.set()
        rx.join(2)
        lists.close()
        producer.close()
        per_partition = {p: round(t - killed_at, 2) for p, t in sorted(served.items())}
        return {"standby_replicas": standby, "users": users, "partitions": parts,
                "changelog_bytes": changelog_bytes, "served_again_s": per_partition,
                "all_served_s": max(per_partition.values()) if len(per_partition) == parts else None,
                "survivor": survivor_phases(workers[0].new_log(), killed_at),
                "session_timeout_s": s.worker.session_timeout_s}
    finally:
        for w in workers:
            w.stop()
        drop_run_state(*workers)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--standby", default="0,1", help="comma-separated AVREC_WORKER__STANDBY_REPLICAS values")
    p.add_argument("--items-collection", default="bench_rebalance_items")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--json-out")
    args = p.parse_args()
    tag = "rb" + uuid.uuid4().hex[:6]
    base_env = {"AVREC_MILVUS__ITEMS_COLLECTION": args.items_collection, "AVREC_WORKER__FANOUT_USERS": "0"}
    log_dir = ROOT / "bench" / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    probe = WorkerProcess(worker_env(tag, base_env), log_dir / "probe.log")
    load_items(probe.settings, ITEMS)
    result = {"cores": os.cpu_count(), "runs": []}
    for standby in (int(x) for x in args.standby.split(",")):
        result["runs"].append(run(standby, args.users, base_env, log_dir, tag, args.timeout_s))
        sys.stderr.write(json.dumps(result["runs"][-1]) + "\n")
    for r in result["runs"]:
        if r["all_served_s"] is not None and r["survivor"]["rebalance_and_recovery_s"] is not None:
            # Extrapolated: the rebalance-and-recovery part grows with the changelog bytes to read.
            scale = 100_000 / r["users"]
            r["per_100k_users"] = {"changelog_bytes": int(r["changelog_bytes"] * scale),
                                   "rebalance_and_recovery_s_measured": r["survivor"]["rebalance_and_recovery_s"]}
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
