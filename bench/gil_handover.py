"""What a busy event loop costs a Milvus call made from a worker thread (the GIL hand-over).

    make stack-up
    .venv/bin/python bench/gil_handover.py --catalogue bench_cat100k --json-out bench/results/gil_handover.json

A search (``--users`` query vectors, limit ``--limit``) and a fetch of ``--fetch`` items by id,
timed alone, then with a pure-Python thread spinning beside them, at CPython's default switch
interval (5 ms) and at ``--switch-ms``. Then the worker's own pattern: the search is started in a
worker thread, the loop thread ranks (``--busy-ms`` of pure Python), then awaits the answer. The
catalogue must exist (``bench/realistic.py --catalogue`` loads one).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.vectors.collections import ItemCollection  # noqa: E402
from streams.vectors.milvus import milvus_client  # noqa: E402


class Spinner:
    """A thread that only burns Python bytecode (holds the GIL whenever it runs)."""

    def __init__(self) -> None:
        self.stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        x = 0
        while not self.stop:
            for i in range(1000):
                x += i

    def __enter__(self) -> Spinner:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.thread.join()


def p50_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    return round(float(np.median(times)), 2)


def spin_for(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        for i in range(200):
            x += i


def busy_loop_ms(items: ItemCollection, v: np.ndarray, limit: int, busy_ms: float, n: int) -> float:
    """p50 of: start the search in a thread, rank for ``busy_ms`` on the loop thread, await the answer."""

    async def once() -> float:
        t = time.perf_counter()
        pending = asyncio.ensure_future(asyncio.to_thread(items.search_ids, v, limit))
        await asyncio.sleep(0)  # the worker yields (awaits a send) right after starting a search
        spin_for(busy_ms)
        await pending
        return (time.perf_counter() - t) * 1000

    async def run() -> float:
        times = []
        for _ in range(n):
            times.append(await once())
            await asyncio.sleep(0.01)
        return round(float(np.median(times)), 2)

    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalogue", required=True, help="Milvus items collection to search")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--fetch", type=int, default=12)
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--switch-ms", type=float, default=1.0)
    p.add_argument("--busy-ms", type=float, default=10.0)
    p.add_argument("--json-out")
    args = p.parse_args()
    s = Settings()
    items = ItemCollection(milvus_client(s.milvus), args.catalogue, s.encoders.dim, s.milvus.timeout_s)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((args.users, s.encoders.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [i for i, _ in items.search_ids(v[:1], args.fetch)[0]]

    def search():
        items.search_ids(v, args.limit)

    def fetch():
        items.get(ids)

    default = sys.getswitchinterval()
    out: dict = {"users": args.users, "limit": args.limit, "fetch": args.fetch, "busy_ms": args.busy_ms}
    out["alone"] = {"search_ms": p50_ms(search, args.calls), "fetch_ms": p50_ms(fetch, args.calls)}
    for switch_ms in (default * 1000, args.switch_ms):
        sys.setswitchinterval(switch_ms / 1000)
        try:
            with Spinner():
                row = {"search_ms": p50_ms(search, args.calls), "fetch_ms": p50_ms(fetch, args.calls)}
            # The answer cannot be needed before the loop is done ranking: busy_ms is the floor here.
            row["busy_loop_then_await_ms"] = busy_loop_ms(items, v, args.limit, args.busy_ms, args.calls)
        finally:
            sys.setswitchinterval(default)
        out[f"switch_{switch_ms:g}ms"] = row
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
