"""Vector search: recall@K of the Milvus index against exact NumPy top-K, and the query rate of each.

    .venv/bin/avrec stack status            # the local stack (Milvus Lite 2.5 server) must be up
    .venv/bin/python bench/vector_search.py --sizes 100000,1000000 --ks 10,200 \
        --json-out bench/results/vector-search.json

Per size N (one fresh collection each, dropped afterwards unless ``--keep``):

* N clustered 384-d unit vectors (200 Gaussian clusters, the generator of
  bench/interactions.py), inserted in 4,000-row calls into a *minimal* collection:
  ``item_id`` VARCHAR primary key, ``vector`` FLOAT_VECTOR(384), ``available`` BOOL,
  with the index the worker's ``ItemCollection`` declares (AUTOINDEX, COSINE).
  The per-modality vector fields of the real ``items`` collection are left out:
  they are not searched, and at 1M they would quadruple the server's memory;
* queries: fresh points from the same clusters (like users' taste vectors), in
  batches of ``--nq`` (64, the worker's ``search_chunk``);
* Milvus: the worker's own search call (``streams.vectors.raw_search.search_ids``,
  filter ``available == true`` as the worker sends it);
* NumPy exact: the same queries against the same float32 matrix, matmul +
  ``argpartition`` + sort of the K best, in row chunks so memory stays bounded;
* batches alternate Milvus / NumPy, so both see the same machine load.

recall@K = |Milvus top-K ∩ exact top-K| / K, averaged over all queries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymilvus import DataType, MilvusClient  # noqa: E402

from bench.report import emit  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.vectors.collections import MAX_ROWS_PER_CALL  # noqa: E402
from streams.vectors.milvus import milvus_client  # noqa: E402
from streams.vectors.raw_search import search_ids  # noqa: E402

log = logging.getLogger("bench.vector_search")
DIM = 384
CLUSTERS = 200


def clustered(n: int, centers: np.ndarray, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    """Same distribution as bench/interactions.py ``clustered_vectors``: center + 0.6 N(0, I), normalised."""
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        v = centers[rng.integers(0, len(centers), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
        out[s:s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def exact_topk(data: np.ndarray, q: np.ndarray, k: int, chunk: int = 262_144) -> np.ndarray:
    """Row indices of the k most similar rows per query (cosine = dot on unit vectors), best first."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(data), chunk):
        sims = q @ data[s:s + chunk].T  # (nq, chunk)
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        keep = np.argpartition(-cand_s, min(k, cand_s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def milvus_pid(settings: Settings) -> int | None:
    try:
        return int((settings.stack.state_dir / "milvus" / "milvus.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def index_params(client: MilvusClient, index_type: str, nlist: int):
    index = client.prepare_index_params()
    # AUTOINDEX as ItemCollection declares it; IVF_FLAT is the one ANN index Milvus Lite
    # accepts besides it (HNSW: "local mode only support FLAT IVF_FLAT AUTOINDEX").
    params = {"nlist": nlist} if index_type == "IVF_FLAT" else {}
    index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=params)
    return index


def create_minimal(client: MilvusClient, name: str, index_type: str = "AUTOINDEX", nlist: int = 1024,
                   index_now: bool = True) -> None:
    """The collection; with ``index_now`` False it has no index (and is not loaded) until ``index_after_load``."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("available", DataType.BOOL)
    client.create_collection(name, schema=schema,
                             index_params=index_params(client, index_type, nlist) if index_now else None)


def index_after_load(client: MilvusClient, name: str, index_type: str, nlist: int) -> None:
    # Measured (docs/PERFORMANCE.md): on Milvus Lite 2.5 this still searches the rows
    # exhaustively (recall 1.000); only rows a restarted server reloads use the index.
    client.create_index(name, index_params(client, index_type, nlist))
    client.load_collection(name)


def wait_indexed(client: MilvusClient, name: str, n: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    desc: dict = {}
    while time.monotonic() < deadline:
        try:
            desc = client.describe_index(name, index_name="vector")
        except Exception as exc:  # noqa: BLE001 - informational only
            desc = {"error": str(exc)}
            break
        # Milvus Lite reports indexed_rows = 0 throughout; "Finished" with nothing pending is the signal.
        if desc.get("state") == "Finished" and int(desc.get("pending_index_rows", 0)) == 0:
            break
        time.sleep(1.0)
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in desc.items()}


def run_size(n: int, args, settings: Settings, rng: np.random.Generator, centers: np.ndarray) -> dict:
    client = milvus_client(settings.milvus.model_copy(update={"timeout_s": 600.0}))
    name = f"{args.prefix}{n}_{uuid.uuid4().hex[:6]}"
    pid = milvus_pid(settings)
    out: dict = {"n": n, "collection": name, "milvus_rss_mib_before": rss_mib(pid)}
    data = clustered(n, centers, rng)
    queries = clustered(args.batches * args.nq, centers, rng)
    try:
        create_minimal(client, name, args.index, args.nlist, index_now=args.build == "before")
        t0 = time.perf_counter()
        for s in range(0, n, MAX_ROWS_PER_CALL):
            e = min(n, s + MAX_ROWS_PER_CALL)
            client.insert(name, [{"item_id": f"it{i}", "vector": data[i].tolist(), "available": True}
                                 for i in range(s, e)])
            if (s // MAX_ROWS_PER_CALL) % 25 == 0:
                log.warning("%s: %d/%d rows, %.0f s", name, e, n, time.perf_counter() - t0)
        out["insert_s"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        client.flush(name)
        if args.build == "after":
            index_after_load(client, name, args.index, args.nlist)
        out["index"] = wait_indexed(client, name, n, 900)
        out["flush_index_s"] = round(time.perf_counter() - t1, 1)
        out["milvus_rss_mib_loaded"] = rss_mib(pid)
        # Warm-up: first searches after a flush load segments/indexes.
        for _ in range(2):
            search_ids(client, name, "vector", queries[: args.nq], max(args.ks), "available == true", 600)
        probes = args.nprobes if args.index == "IVF_FLAT" else [None]
        for k, nprobe in ((k, p) for p in probes for k in args.ks):
            params = {"nprobe": nprobe} if nprobe else None
            mil_t, np_t, hits = [], [], 0
            for b in range(args.batches):
                q = queries[b * args.nq:(b + 1) * args.nq]
                t = time.perf_counter()
                res = search_ids(client, name, "vector", q, k, "available == true", 600, params)
                mil_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                ex = exact_topk(data, q, k)
                np_t.append(time.perf_counter() - t)
                for row, exact in zip(res, ex):
                    got = {int(i[2:]) for i, _ in row}
                    hits += len(got.intersection(exact.tolist()))
            nq_total = args.batches * args.nq
            mq, nqps = nq_total / sum(mil_t), nq_total / sum(np_t)
            key = f"k{k}" if nprobe is None else f"k{k}_nprobe{nprobe}"
            out[key] = {
                "queries": nq_total,
                "recall": round(hits / (k * nq_total), 4),
                "milvus_qps": round(mq, 1),
                "numpy_qps": round(nqps, 1),
                "milvus_over_numpy_qps": round(mq / nqps, 2),
                "milvus_batch_ms_p50": round(float(np.percentile(mil_t, 50)) * 1000, 1),
                "milvus_batch_ms_p99": round(float(np.percentile(mil_t, 99)) * 1000, 1),
                "numpy_batch_ms_p50": round(float(np.percentile(np_t, 50)) * 1000, 1),
                "numpy_batch_ms_p99": round(float(np.percentile(np_t, 99)) * 1000, 1),
            }
            log.warning("%s %s: %s", name, key, out[key])
        out["milvus_rss_mib_after_search"] = rss_mib(pid)
    finally:
        if args.keep:
            log.warning("kept collection %s", name)
        elif client.has_collection(name):
            client.drop_collection(name)
        client.close()
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--ks", default="10,200", help="K values (the worker's ann_candidates is 200)")
    p.add_argument("--nq", type=int, default=64, help="queries per search call")
    p.add_argument("--batches", type=int, default=16, help="search calls per K (each timed for both)")
    p.add_argument("--prefix", default="bench_vs_", help="collection name prefix")
    p.add_argument("--keep", action="store_true", help="keep the collections")
    p.add_argument("--index", choices=("AUTOINDEX", "IVF_FLAT"), default="AUTOINDEX",
                   help="AUTOINDEX: what the worker declares; IVF_FLAT: Milvus Lite's one ANN index")
    p.add_argument("--nlist", type=int, default=1024, help="IVF_FLAT clusters")
    p.add_argument("--build", choices=("before", "after"), default="before",
                   help="create the index with the collection (as the worker does) or after loading the rows")
    p.add_argument("--nprobes", default="8,32,128", help="IVF_FLAT clusters probed per query (one pass each)")
    p.add_argument("--json-out")
    args = p.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    args.nprobes = [int(x) for x in args.nprobes.split(",")]
    settings = Settings()
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    result: dict = {"dim": DIM, "clusters": CLUSTERS, "nq": args.nq, "batches": args.batches,
                    "metric": "COSINE", "index_requested": args.index,
                    "nlist": args.nlist if args.index == "IVF_FLAT" else None, "index_built": args.build,
                    "schema": "minimal: item_id VARCHAR pk, vector FLOAT_VECTOR(384), available BOOL",
                    "numpy_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                    "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0], "sizes": []}
    for n in (int(s) for s in args.sizes.split(",")):
        result["sizes"].append(run_size(n, args, settings, rng, centers))
        if args.json_out:  # partial results survive a later failure
            Path(args.json_out).write_text(json.dumps(result, indent=2))
    result["loadavg_end"] = os.getloadavg()[0]
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
