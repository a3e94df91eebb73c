"""One worker under realistic users: real histories and skewed activity, a 100k-item catalogue.

    make stack-up
    .venv/bin/python bench/realistic.py --dataset ../shared/data/ml-100k --items 100000 \
        --catalogue bench_cat100k --json-out bench/results/realistic.json

``bench/interactions.py`` draws users uniformly from 10k-100k of them, so they have
0.2-2 prior events each and every list is cheap. Here the users are the ones a real
platform has, on one 100k-item catalogue (synthetic clustered vectors, with the
MovieLens items added), in three measurements of one run:

* **floor**: the same Kafka produce -> consume loop with no processing at all;
* **ml100k**: MovieLens-100k in time order, at full speed: 943 real users,
  20-737 ratings each. The first ``--warmup`` interactions build the users'
  histories (timed, but as a phase of their own), the next ``--events`` give the
  throughput (saturation), the next ``--paced-rate`` x ``--paced-s`` the latency
  at that rate;
* **zipf**: ``--zipf-users`` users whose activity follows a Zipf law (the most
  active user sends the most events), items drawn by a Zipf popularity; the
  ``--zipf-warm`` most active users first get 20-200 items of history each
  (the warm-up phase), then the same saturation and paced phases.

Each worker run starts on fresh state (own app id and topics). For each phase:
events/s from the first send to the last answer, p50/p95/p99 from send to the
user's refreshed list, and for the saturation phase CPU ms per event of every
process on the path (worker, Kafka, Milvus, Triton and this generator) and, from
the worker's own stats line, lists ranked and item fetches per batch and ms per
list (the worker logs that line every ``AVREC_WORKER__STATS_EVERY_S``). The
history each measured event's user had (distinct items before it) is reported
too, so the realism of a run is a number, not a claim.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import uuid
from argparse import Namespace
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interactions import (bench_setup, drop_run_state, load_catalogue, measure, mode_env, profiler,  # noqa: E402
                                run_floor, saturate)
from bench.report import emit  # noqa: E402
from bench.scaleout import load_items, movielens_log  # noqa: E402
from tests.workerproc import WorkerProcess  # noqa: E402

log = logging.getLogger("bench.realistic")

EVENT_TYPES = ["view", "like", "complete", "skip", "share"]
EVENT_MIX = [0.5, 0.2, 0.15, 0.1, 0.05]


def movielens_events(path: Path, n: int) -> tuple[list[str], list[dict]]:
    """(MovieLens item ids, the first ``n`` interactions in time order as event dicts)."""
    items, records = movielens_log(path, n)
    return items, [orjson.loads(value) for _, value in records]


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def zipf_events(args, rng: np.random.Generator, tag: str) -> tuple[list[dict], int]:
    """(warm-up + measured events, how many of them are warm-up) for the synthetic mix.

    Warm-up: each of the ``--zipf-warm`` most active users likes or views 20-200
    distinct items drawn by popularity, all users interleaved. Measured: users by
    activity rank (Zipf), items by popularity (Zipf), the usual event-type mix.
    """
    pop = zipf_weights(args.items, args.item_zipf)
    warm: list[tuple[int, int]] = []
    for u in range(min(args.zipf_warm, args.zipf_users)):
        length = int(rng.integers(20, 201))
        picks = rng.choice(args.items, size=length * 2, p=pop)
        warm.extend((u, int(i)) for i in list(dict.fromkeys(picks.tolist()))[:length])
    order = rng.permutation(len(warm))
    measured_n = args.events + int(args.paced_rate * args.paced_s)
    users = rng.choice(args.zipf_users, size=measured_n, p=zipf_weights(args.zipf_users, args.user_zipf))
    items = rng.choice(args.items, size=measured_n, p=pop)
    pairs = [warm[k] for k in order] + list(zip(users.tolist(), items.tolist()))
    types = rng.choice(EVENT_TYPES, len(pairs), p=EVENT_MIX)
    t0 = 1_700_000_000.0
    events = [{"event_id": f"{tag}-{k}", "user_id": f"zu{u}", "item_id": f"it{i}", "type": str(types[k]),
               "watch_ms": int(rng.integers(1000, 30000)), "ts": t0 + k} for k, (u, i) in enumerate(pairs)]
    return events, len(warm)


def history_lengths(events: list[dict]) -> list[int]:
    """For each event, the number of distinct items its user had interacted with before it."""
    seen: dict[str, set[str]] = {}
    out = []
    for e in events:
        hist = seen.setdefault(e["user_id"], set())
        out.append(len(hist))
        hist.add(e["item_id"])
    return out


def describe(lengths: list[int]) -> dict:
    a = np.asarray(lengths)
    return {"mean": round(float(a.mean()), 1), "p50": int(np.percentile(a, 50)), "p90": int(np.percentile(a, 90)),
            "share_ge_20": round(float((a >= 20).mean()), 3)}


STATS_LINE = re.compile(r"interactions: [\d.]+ events/s over [\d.]+s \((\d+) batches, ([\d.]+) events each\); "
                        r"per batch ms: (?P<ms>[^;]*); per batch: (?P<counts>[^;]*)"
                        r"(?:; queued ms: mean (?P<queued>[\d.]+), max [\d.]+)?$")


def batch_profile(log_text: str) -> dict | None:
    """The worker's stats lines over a phase, batch-weighted: events, lists and item fetches per
    batch and ms per list (the "lists" stage over the lists it ranked)."""
    batches = events = lists = fetches = lists_ms = queued = 0.0
    for line in log_text.splitlines():
        m = STATS_LINE.search(line.strip())
        if not m:
            continue
        n = int(m.group(1))
        ms = dict((k, float(v)) for k, v in (part.rsplit(" ", 1) for part in m.group("ms").split(", ")))
        counts = dict((k, float(v)) for k, v in (part.rsplit(" ", 1) for part in m.group("counts").split(", ")))
        batches += n
        events += n * float(m.group(2))
        lists += n * (counts.get("lists", 0.0) + counts.get("fan-out lists", 0.0))
        fetches += n * counts.get("item fetches", 0.0)
        lists_ms += n * ms.get("lists", 0.0)
        queued += n * float(m.group(2)) * float(m.group("queued") or 0.0)
    if not batches:
        return None
    return {"batches": int(batches), "events_per_batch": round(events / batches, 1),
            "lists_per_batch": round(lists / batches, 1), "item_fetches_per_batch": round(fetches / batches, 1),
            "ms_per_list": round(lists_ms / lists, 2) if lists else None,
            # how long an event waited before its batch began, event-weighted (0 from workers without it)
            "queued_ms": round(queued / events, 1) if events else None}


def run_workload(name: str, events: list[dict], warmup: int, args, env: dict, log_dir: Path) -> dict:
    """Warm-up, saturation and paced phases of ``events`` through one fresh worker."""
    n_paced = int(args.paced_rate * args.paced_s)
    if len(events) < warmup + args.events + n_paced:
        raise SystemExit(f"{name}: {len(events)} events, fewer than warm-up {warmup} + saturation {args.events} "
                         f"+ paced {n_paced}: lower --warmup, --events or --paced-s")
    phases = {"warmup": events[:warmup], "saturation": events[warmup : warmup + args.events],
              "paced": events[warmup + args.events : warmup + args.events + n_paced]}
    hist = history_lengths(events)
    out: dict = {"history_before_measured_events": describe(hist[warmup : warmup + args.events + n_paced]),
                 "users_in_saturation": len({e["user_id"] for e in phases["saturation"]})}
    w = WorkerProcess(env, log_dir / f"worker-realistic-{name}.log")
    w.start()
    s = w.settings
    topic_in, topic_out = s.kafka.topics.interactions.name, s.kafka.topics.recommendations.name
    id_of = lambda v: orjson.loads(v)["source_event_id"] if v else None  # noqa: E731
    try:
        if phases["warmup"]:
            out["warmup"] = measure(s.kafka, topic_in, topic_out, id_of, phases["warmup"], args.rate, args.drain_s,
                                    keep_going=w.alive)
        log_from = w.log_path.stat().st_size
        out["saturation"] = saturate(w, phases["saturation"], args, log_dir / f"profile-realistic-{name}.txt")
        with open(w.log_path, "rb") as fh:
            fh.seek(log_from)
            out["saturation"]["batches"] = batch_profile(fh.read().decode(errors="replace"))
        if phases["paced"]:
            spy = profiler(args, w, log_dir / f"profile-realistic-{name}-paced.txt")
            try:
                out["paced"] = measure(s.kafka, topic_in, topic_out, id_of, phases["paced"], args.paced_rate,
                                       args.drain_s, keep_going=w.alive)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its report on SIGINT
                    spy.wait(timeout=30)
            out["paced"]["offered_rate"] = args.paced_rate
        out["worker_alive"] = w.alive()
        return out
    finally:
        w.stop()
        drop_run_state(w)


def ratios(result: dict) -> dict:
    """Each workload against the Kafka floor measured in the same run."""
    out: dict = {}
    floor = result.get("floor", {})
    for name in ("ml100k", "zipf"):
        r = result.get(name)
        if not r:
            continue
        fs, rs = floor.get("saturation", {}), r["saturation"]
        if fs.get("events_per_s") and rs.get("events_per_s"):
            out[f"{name}_throughput_over_floor"] = round(rs["events_per_s"] / fs["events_per_s"], 3)
        if "paced" in floor and "paced" in r and r["paced"]["p99_ms"] is not None:
            out[f"{name}_p99_minus_floor_ms"] = round(r["paced"]["p99_ms"] - floor["paced"]["p99_ms"], 1)
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    p.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size (MovieLens items added)")
    p.add_argument("--catalogue", help="Milvus items collection; loaded only if missing, kept afterwards")
    p.add_argument("--warmup", type=int, default=40_000, help="MovieLens interactions that build histories first")
    p.add_argument("--events", type=int, default=20_000, help="events in each saturation phase")
    p.add_argument("--rate", type=float, default=5000.0, help="offered events/s in warm-up and saturation")
    p.add_argument("--paced-rate", type=float, default=1000.0, help="offered events/s in the paced phase")
    p.add_argument("--paced-s", type=float, default=20.0, help="length of the paced phase")
    p.add_argument("--zipf-users", type=int, default=20_000)
    p.add_argument("--zipf-warm", type=int, default=400, help="most active users given 20-200 items of history")
    p.add_argument("--user-zipf", type=float, default=0.8, help="exponent of the users' activity law")
    p.add_argument("--item-zipf", type=float, default=0.9, help="exponent of the items' popularity law")
    p.add_argument("--drain-s", type=float, default=300.0)
    p.add_argument("--workloads", default="floor,ml100k,zipf")
    p.add_argument("--json-out")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the worker during each saturation and paced phase (profile-realistic-*.txt beside the logs)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    unique, base_env, log_dir = bench_setup("real", args.catalogue)
    probe = WorkerProcess(base_env, log_dir / "probe-realistic.log")
    workloads = args.workloads.split(",")
    result: dict = {"items": args.items, "offered_rate": args.rate, "paced_rate": args.paced_rate,
                    "cores": os.cpu_count()}
    result["catalogue_load_s"] = round(load_catalogue(probe.settings, args.items, rng, reuse=bool(args.catalogue)), 1)
    if "floor" in workloads:
        floor_args = Namespace(events=args.events, items=args.items, rate=args.rate, latency_rate=args.paced_rate,
                               latency_s=args.paced_s, drain_s=args.drain_s)
        result["floor"] = run_floor(floor_args, rng)
    if "ml100k" in workloads:
        n = args.warmup + args.events + int(args.paced_rate * args.paced_s)
        ml_items, events = movielens_events(args.dataset, n)
        load_items(probe.settings, ml_items)
        result["ml100k"] = run_workload("ml100k", events, args.warmup, args, {**base_env, **mode_env(unique, "ml")},
                                        log_dir)
    if "zipf" in workloads:
        events, warm = zipf_events(args, rng, f"z{uuid.uuid4().hex[:6]}")
        result["zipf"] = run_workload("zipf", events, warm, args, {**base_env, **mode_env(unique, "zf")}, log_dir)
    result["ratios"] = ratios(result)
    emit(result, args.json_out)
    if not args.catalogue:
        probe.drop_collections()


if __name__ == "__main__":
    main()
