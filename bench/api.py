"""Read API latency: ``GET /users/{id}/recommendations`` (plain and ``explain=true``) against live workers.

    make stack-up
    .venv/bin/python bench/api.py --dataset ../shared/data/ml-100k --warmup 100000 --items 20000 \
        --seconds 20 --json-out bench/results/api.json

Set-up (one run, fresh state): a catalogue of ``--items`` synthetic clustered vectors plus the
MovieLens items (``bench/interactions.py``, ``bench/scaleout.py``), then the first ``--warmup``
MovieLens-100k interactions replayed through the worker(s) in time order at full speed, so the
users read afterwards have their real histories (reported: distinct items per user). With
``--ranker PATH`` the workers rank with that fitted learned ranker (``avrec ranker fit``), else with
the weighted blend.

Measured: ``--concurrency`` client threads, each a keep-alive HTTP connection, send requests back
to back for ``--seconds`` per kind, cycling through the kinds one request at a time (so every kind
sees the same background load), each for a user drawn uniformly among those with a history, to
the workers in turn (with ``--workers 2`` half of the requests are forwarded to the user's owner).
Latency is from the request's send to its last byte, on the client. Kinds: ``plain`` (n=10),
``explain`` (n=10, explain=true), ``page`` (n=10, offset=40, exclude=3 ids) and ``similar``
(``/items/{id}/similar?n=10``). The workers are otherwise idle (the replay is done).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interactions import bench_setup, drop_run_state, load_catalogue, measure, mode_env  # noqa: E402
from bench.realistic import describe, history_lengths, movielens_events  # noqa: E402
from bench.report import emit  # noqa: E402
from bench.scaleout import load_items  # noqa: E402
from streams.kafka.admin import wait_group_stable  # noqa: E402
from tests.workerproc import WorkerProcess  # noqa: E402

log = logging.getLogger("bench.api")


def _ready(w: WorkerProcess, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{w.web_url}/health/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"worker not ready in {timeout:.0f}s:\n{w.tail()}")
        time.sleep(0.5)


def _stats(lat: list[float], wall: float) -> dict:
    a = np.asarray(lat) if lat else np.zeros(1)
    return {"requests": len(lat), "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2),
            "mean_ms": round(float(a.mean()), 2)}


def latency_run(urls: list[str], kinds: dict, seconds: float, concurrency: int) -> dict:
    """``concurrency`` closed-loop clients for ``seconds``, each cycling through the request ``kinds``
    (name -> ``path(rng)``) one request at a time: every kind sees the same load on the machine, so
    their latencies compare even on a shared, noisy box. Per kind: p50/p95/p99, errors."""
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    names = list(kinds)
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        mine: dict[str, list[float]] = {name: [] for name in names}
        with httpx.Client(timeout=30) as http:
            n = k
            while time.perf_counter() < stop_at:
                name = names[n % len(names)]
                url = urls[(n // len(names)) % len(urls)] + kinds[name](rng)
                n += 1
                t0 = time.perf_counter()
                try:
                    r = http.get(url)
                    r.read()
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                if status == "200":
                    mine[name].append((time.perf_counter() - t0) * 1000)
                else:
                    with lock:
                        errors[f"{name} {status}"] = errors.get(f"{name} {status}", 0) + 1
        with lock:
            for name, v in mine.items():
                lat[name].extend(v)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {**{name: _stats(v, wall) for name, v in lat.items()}, "errors": errors}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    p.add_argument("--items", type=int, default=20_000, help="synthetic catalogue size (MovieLens items added)")
    p.add_argument("--catalogue", help="Milvus items collection; loaded only if missing, kept afterwards")
    p.add_argument("--warmup", type=int, default=100_000, help="MovieLens interactions replayed first")
    p.add_argument("--rate", type=float, default=5000.0, help="offered events/s of the replay")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ranker", help="a fitted ranker file (avrec ranker fit): rank with it, not the blend")
    p.add_argument("--seconds", type=float, default=20.0, help="measuring time per request kind")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--phases", default="plain,explain,page,similar")
    p.add_argument("--json-out")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    unique, base_env, log_dir = bench_setup("api", args.catalogue)
    env = {**base_env, **mode_env(unique, "api"), "AVREC_WORKER__FANOUT_USERS": "0"}
    if args.ranker:
        env["AVREC_RANKING__RANKER_PATH"] = str(Path(args.ranker).resolve())
    workers = [WorkerProcess({**env, "AVREC_WORKER__REPLICA": str(k)}, log_dir / f"worker-api-{k}.log")
               for k in range(args.workers)]
    s = workers[0].settings
    result: dict = {"items": args.items, "warmup_events": args.warmup, "workers": args.workers,
                    "concurrency": args.concurrency, "ranker": bool(args.ranker), "seconds": args.seconds,
                    "cores": os.cpu_count()}
    result["catalogue_load_s"] = round(load_catalogue(s, args.items, rng, reuse=bool(args.catalogue)), 1)
    ml_items, events = movielens_events(args.dataset, args.warmup)
    load_items(s, ml_items)
    hist = history_lengths(events)
    per_user: dict[str, int] = {}
    for e, h in zip(events, hist):
        per_user[e["user_id"]] = h + 1
    result["history_per_user"] = describe(list(per_user.values()))
    result["users"] = len(per_user)
    try:
        for w in workers:
            w.start()
        if args.workers > 1:
            wait_group_stable(s.kafka, s.app_id, args.workers, 120)
        id_of = lambda v: __import__("orjson").loads(v)["source_event_id"] if v else None  # noqa: E731
        t0 = time.perf_counter()
        replay = measure(s.kafka, s.kafka.topics.interactions.name, s.kafka.topics.recommendations.name, id_of,
                         events, args.rate, 600.0, keep_going=lambda: all(w.alive() for w in workers))
        result["replay"] = {"events_per_s": replay.get("events_per_s"), "s": round(time.perf_counter() - t0, 1),
                            "completed": replay.get("completed")}
        for w in workers:
            _ready(w)
        urls = [w.web_url for w in workers]
        users = sorted(per_user)
        items = ml_items

        def pick(r) -> str:
            return users[int(r.integers(len(users)))]

        phases = {
            "plain": lambda r: f"/users/{pick(r)}/recommendations?n=10",
            "explain": lambda r: f"/users/{pick(r)}/recommendations?n=10&explain=true",
            "page": lambda r: (f"/users/{pick(r)}/recommendations?n=10&offset=40&exclude="
                               + ",".join(items[int(i)] for i in r.integers(len(items), size=3))),
            "similar": lambda r: f"/items/{items[int(r.integers(len(items)))]}/similar?n=10",
        }
        chosen = {name: phases[name] for name in args.phases.split(",")}
        latency_run(urls, chosen, min(3.0, args.seconds), args.concurrency)  # warm the caches and connections
        result.update(latency_run(urls, chosen, args.seconds * len(chosen), args.concurrency))
        result["workers_alive"] = all(w.alive() for w in workers)
    finally:
        for w in workers:
            w.stop()
        drop_run_state(*workers)
    emit(result, args.json_out)
    if not args.catalogue:
        workers[0].drop_collections()


if __name__ == "__main__":
    main()
