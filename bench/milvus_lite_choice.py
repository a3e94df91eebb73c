#!/usr/bin/env python
"""Benchmark a Milvus (Lite) server for the avrec streaming-recommender workload.

Used to choose between Milvus Lite 3.x (pure Python + FAISS, gRPC server) and
Milvus Lite 2.5.x (C++ core).  The script talks to an already running server
through ``pymilvus.MilvusClient`` only, so the same file runs unchanged under
pymilvus 2.5.x and 3.x.

Workload (all loops are bounded):
  1. create a collection: INT64 pk ``id``, FLOAT_VECTOR ``vec`` (dim D),
     VARCHAR ``creator``; COSINE metric;
  2. insert N unit vectors in batches (timed); ``--data random`` (default,
     i.i.d. -- worst case for ANN recall) or ``--data clustered``;
  3. create the vector index (AUTOINDEX by default) and load (timed);
  4. search latency nq=1 top-K, search throughput nq=64 top-K;
  5. recall@K against exact numpy brute force (fresh queries from the data
     distribution and queries near stored items); optional ``--ef-sweep``;
  6. upsert latency (single row existing id, single row new id, 64-row
     batch), then a read-your-write check on upserted rows;
  7. get-by-id latency (64 ids), single-id delete latency and delete check;
  8. server RSS (pid given, or found from the listening TCP port).

Example:
  python bench/milvus_lite_choice.py --uri http://127.0.0.1:29530 \
      --n-items 100000 --dim 384 --json-out /tmp/mv3.json

The JSON summary is printed to stdout; diagnostics go to stderr via logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlparse

import numpy as np
from pymilvus import DataType, MilvusClient

try:  # optional
    import psutil  # type: ignore
except ImportError:  # pragma: no cover - depends on environment
    psutil = None

LOG = logging.getLogger("milvus_lite_choice")

VEC = "vec"
PK = "id"
CREATOR = "creator"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Return ``n`` random float32 unit vectors of dimension ``dim``."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class VectorSource:
    """Item/query vectors: i.i.d. random unit vectors, or a clustered mix.

    ``random`` is the worst case for ANN indexes (no structure, all cosine
    similarities near 0).  ``clustered`` mimics embedding data: unit vectors
    drawn around ``n_clusters`` random centres (cosine to centre ~0.78), with
    queries drawn from the same distribution.
    """

    def __init__(self, rng: np.random.Generator, dim: int, kind: str,
                 n_clusters: int, spread: float = 0.8):
        self.rng, self.dim, self.kind, self.spread = rng, dim, kind, spread
        self.centres = unit_vectors(rng, n_clusters, dim) if kind == "clustered" else None

    def sample(self, n: int) -> np.ndarray:
        noise = unit_vectors(self.rng, n, self.dim)
        if self.centres is None:
            return noise
        c = self.centres[self.rng.integers(0, len(self.centres), size=n)]
        x = c + self.spread * noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)


def pct(values: List[float], q: float) -> Optional[float]:
    """Percentile in milliseconds (values are seconds), rounded."""
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 3)


def lat_summary(values: List[float]) -> Dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": pct(values, 50),
        "p99_ms": pct(values, 99),
        "mean_ms": round(float(np.mean(values)) * 1000.0, 3) if values else None,
    }


def timed(fn: Callable[[], Any]) -> tuple:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def rows_for(ids: np.ndarray, vecs: np.ndarray) -> List[Dict[str, Any]]:
    return [
        {PK: int(i), VEC: v.tolist(), CREATOR: f"creator_{int(i) % 1000}"}
        for i, v in zip(ids, vecs)
    ]


def hit_id(hit: Any) -> int:
    """Primary key of one search hit (dict in 2.5.x/3.x MilvusClient)."""
    if isinstance(hit, dict):
        if PK in hit:
            return int(hit[PK])
        return int(hit["entity"][PK])
    return int(getattr(hit, "id"))


def exact_topk(data: np.ndarray, alive: np.ndarray, queries: np.ndarray,
               k: int) -> List[set]:
    """Exact cosine top-k (data rows are unit vectors) over alive rows."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ data.T  # (nq, N)
    sims[:, ~alive] = -np.inf
    idx = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    return [set(int(i) for i in row) for row in idx]


# --------------------------------------------------------------------------
# server pid / RSS
# --------------------------------------------------------------------------

def _listen_inodes(port: int) -> set:
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A":  # LISTEN
                continue
            if int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def find_server_pid(port: int) -> Optional[int]:
    """Pid of the process listening on ``port`` (psutil, else /proc scan)."""
    if psutil is not None:
        try:
            for c in psutil.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr and \
                        c.laddr.port == port and c.pid:
                    return int(c.pid)
        except (psutil.AccessDenied, OSError):
            LOG.debug("psutil.net_connections failed; falling back to /proc")
    inodes = _listen_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    return int(name)
            except OSError:
                continue
    return None


def proc_mem(pid: Optional[int]) -> Dict[str, Any]:
    """Current RSS and peak RSS (VmHWM) in MiB of ``pid``."""
    if pid is None:
        return {"pid": None, "rss_mib": None, "peak_rss_mib": None}
    out: Dict[str, Any] = {"pid": pid, "rss_mib": None, "peak_rss_mib": None}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = round(int(line.split()[1]) / 1024.0, 1)
                elif line.startswith("VmHWM:"):
                    out["peak_rss_mib"] = round(int(line.split()[1]) / 1024.0, 1)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            out["cmd"] = fh.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        if psutil is not None:
            try:
                out["rss_mib"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
            except psutil.Error:
                pass
    return out


# --------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------

def build_schema(client: MilvusClient, dim: int):
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(PK, DataType.INT64, is_primary=True)
    schema.add_field(VEC, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(CREATOR, DataType.VARCHAR, max_length=64)
    return schema


def run(args: argparse.Namespace) -> Dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n, dim, k = args.n_items, args.dim, args.top_k
    port = urlparse(args.uri).port
    server_pid = args.server_pid or (find_server_pid(port) if port else None)
    LOG.info("server pid for port %s: %s", port, server_pid)

    import pymilvus  # for the version string only

    result: Dict[str, Any] = {
        "uri": args.uri,
        "pymilvus": pymilvus.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "n_items": n, "dim": dim, "top_k": k,
        "consistency_level": args.consistency,
        "data": args.data,
        "errors": [],
        "notes": [],
        "search_params": args.search_params,
    }
    client = MilvusClient(uri=args.uri, timeout=args.rpc_timeout)
    try:
        result["server_version"] = client.get_server_version()
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        result["server_version"] = None
        # milvus-lite 2.5.1 answers UNIMPLEMENTED here; not fatal.
        detail = " ".join(str(exc).split())[:160]
        result["notes"].append(f"get_server_version: {type(exc).__name__}: {detail}")
    result["server_mem_start"] = proc_mem(server_pid)

    name = f"avrec_bench_{uuid.uuid4().hex[:10]}"
    result["collection"] = name
    LOG.info("collection %s", name)
    src = VectorSource(rng, dim, args.data, max(1, n // args.cluster_size))
    data = src.sample(n)
    alive = np.ones(n, dtype=bool)
    try:
        client.create_collection(
            collection_name=name, schema=build_schema(client, dim),
            consistency_level=args.consistency, timeout=args.rpc_timeout)

        # ---- insert --------------------------------------------------------
        batch_times = []
        t_all = time.perf_counter()
        for start in range(0, n, args.batch_size):
            stop = min(start + args.batch_size, n)
            rows = rows_for(np.arange(start, stop), data[start:stop])
            dt, res = timed(lambda: client.insert(name, rows, timeout=args.rpc_timeout))
            batch_times.append(dt)
            got = res.get("insert_count") if isinstance(res, dict) else None
            if got is not None and got != stop - start:
                result["errors"].append(f"insert batch {start}: count {got}")
        insert_s = time.perf_counter() - t_all
        flush_s, _ = timed(lambda: client.flush(name, timeout=args.rpc_timeout))
        result["insert"] = {
            "total_s": round(insert_s, 3),
            "rows_per_s": round(n / insert_s, 1),
            "batch_size": args.batch_size,
            "batch": lat_summary(batch_times),
            "flush_s": round(flush_s, 3),
        }
        LOG.info("inserted %d rows in %.1fs", n, insert_s)

        # ---- index + load --------------------------------------------------
        ip = client.prepare_index_params()
        ip.add_index(field_name=VEC, index_type=args.index_type,
                     metric_type="COSINE", index_name=VEC)
        idx_s, _ = timed(lambda: client.create_index(name, ip, timeout=args.rpc_timeout))
        load_s, _ = timed(lambda: client.load_collection(name, timeout=args.rpc_timeout))
        try:
            desc = client.describe_index(name, index_name=VEC)
        except Exception as exc:  # noqa: BLE001
            desc = {"error": repr(exc)}
        result["index"] = {
            "requested": args.index_type,
            "described": {kk: str(vv) for kk, vv in dict(desc).items()},
            "create_index_s": round(idx_s, 3),
            "load_s": round(load_s, 3),
        }
        LOG.info("index %.1fs, load %.1fs, describe=%s", idx_s, load_s, desc)
        result["server_mem_loaded"] = proc_mem(server_pid)

        sp = {"metric_type": "COSINE", "params": json.loads(args.search_params)}

        def search(q: np.ndarray, limit: int = k):
            return client.search(name, data=q.tolist(), limit=limit,
                                 anns_field=VEC, search_params=sp,
                                 output_fields=[PK], timeout=args.rpc_timeout)

        # ---- search latency nq=1 -------------------------------------------
        for q in src.sample(min(10, args.queries)):  # warm-up
            search(q[None, :])
        lat = []
        short = 0
        for q in src.sample(args.queries):
            dt, res = timed(lambda: search(q[None, :]))
            lat.append(dt)
            if len(res[0]) < k:
                short += 1
        result["search_nq1"] = lat_summary(lat)
        result["search_nq1"]["short_results"] = short
        LOG.info("search nq=1: %s", result["search_nq1"])

        # ---- search throughput nq=64 ---------------------------------------
        nq = 64
        batches = max(2, min(args.max_throughput_batches, args.queries // nq))
        qs = src.sample(nq * batches)
        t0 = time.perf_counter()
        done = 0
        for b in range(batches):
            search(qs[b * nq:(b + 1) * nq])
            done += nq
            if time.perf_counter() - t0 > args.throughput_seconds:
                break
        el = time.perf_counter() - t0
        result["search_nq64"] = {"queries": done, "seconds": round(el, 3),
                                 "qps": round(done / el, 1),
                                 "ms_per_batch": round(el * 1000 * nq / done, 3)}
        LOG.info("search nq=64: %s", result["search_nq64"])

        # ---- recall@k ------------------------------------------------------
        def recall(queries: np.ndarray) -> float:
            truth = exact_topk(data, alive, queries, k)
            hits = 0
            for i in range(0, len(queries), nq):
                res = search(queries[i:i + nq])
                for j, row in enumerate(res):
                    hits += len(truth[i + j] & {hit_id(h) for h in row})
            return round(hits / (k * len(queries)), 4)

        rq = args.recall_queries
        q_rand = src.sample(rq)
        near_src = rng.choice(n, size=rq, replace=False)
        q_near = data[near_src] + 0.5 * unit_vectors(rng, rq, dim)
        result["recall_at_k"] = {"fresh_queries": recall(q_rand),
                                 "near_item_queries": recall(q_near),
                                 "n_queries": rq}
        LOG.info("recall: %s", result["recall_at_k"])

        # ---- optional ef sweep: recall and nq=1 latency per search "ef" ------
        sweep = []
        for ef in [int(x) for x in args.ef_sweep.split(",") if x.strip()]:
            sp_ef = {"metric_type": "COSINE", "params": {"ef": ef}}

            def search_ef(q: np.ndarray):
                return client.search(name, data=q.tolist(), limit=k,
                                     anns_field=VEC, search_params=sp_ef,
                                     output_fields=[PK], timeout=args.rpc_timeout)

            t_rand = exact_topk(data, alive, q_rand, k)
            t_near = exact_topk(data, alive, q_near, k)
            lat, h_rand, h_near = [], 0, 0
            for j in range(rq):
                dt, res = timed(lambda: search_ef(q_rand[j][None, :]))
                lat.append(dt)
                h_rand += len(t_rand[j] & {hit_id(h) for h in res[0]})
                h_near += len(t_near[j] & {hit_id(h) for h in
                                           search_ef(q_near[j][None, :])[0]})
            sweep.append({"ef": ef, "nq1_p50_ms": pct(lat, 50),
                          "nq1_p99_ms": pct(lat, 99),
                          "recall_fresh": round(h_rand / (k * rq), 4),
                          "recall_near": round(h_near / (k * rq), 4)})
            LOG.info("ef sweep: %s", sweep[-1])
        if sweep:
            result["ef_sweep"] = sweep

        # ---- single-row upsert latency -------------------------------------
        up_ids = rng.choice(n, size=args.upserts, replace=False)
        up_vecs = src.sample(args.upserts)
        lat = []
        for i, v in zip(up_ids, up_vecs):
            row = rows_for(np.array([i]), v[None, :])
            dt, _ = timed(lambda: client.upsert(name, row, timeout=args.rpc_timeout))
            lat.append(dt)
            data[i] = v
        result["upsert_single"] = lat_summary(lat)
        LOG.info("upsert: %s", result["upsert_single"])

        # single-row upserts of brand-new ids (new items arriving)
        new_vecs = src.sample(args.upserts)
        lat = []
        for j, v in enumerate(new_vecs):
            row = rows_for(np.array([n + j]), v[None, :])
            dt, _ = timed(lambda: client.upsert(name, row, timeout=args.rpc_timeout))
            lat.append(dt)
        result["upsert_single_new_id"] = lat_summary(lat)

        # micro-batched upserts: 64 existing ids per call
        lat = []
        for _ in range(args.batch_upserts):
            b_ids = rng.choice(n, size=64, replace=False)
            b_vecs = src.sample(64)
            rows = rows_for(b_ids, b_vecs)
            dt, _ = timed(lambda: client.upsert(name, rows, timeout=args.rpc_timeout))
            lat.append(dt)
            data[b_ids] = b_vecs
        result["upsert_batch64"] = lat_summary(lat)
        LOG.info("upsert new id: %s; batch64: %s", result["upsert_single_new_id"],
                 result["upsert_batch64"])

        # read-your-write: searching an upserted vector must return its id first
        check = up_ids[:min(50, len(up_ids))]
        fresh = 0
        fresh_lat = []
        for i in check:
            dt, res = timed(lambda: search(data[i][None, :], limit=1))
            fresh_lat.append(dt)
            if res[0] and hit_id(res[0][0]) == int(i):
                fresh += 1
        result["upsert_visible_top1"] = round(fresh / len(check), 4)
        cnt = client.query(name, filter=f"{PK} in {[int(i) for i in check]}",
                           output_fields=[PK], timeout=args.rpc_timeout)
        result["upsert_no_duplicates"] = len(cnt) == len(check)

        # ---- get by id (64 ids) --------------------------------------------
        lat = []
        wrong = 0
        for _ in range(args.get_repeats):
            ids = [int(i) for i in rng.choice(n, size=64, replace=False)]
            dt, res = timed(lambda: client.get(name, ids=ids,
                                               output_fields=[PK, CREATOR, VEC],
                                               timeout=args.rpc_timeout))
            lat.append(dt)
            if len(res) != 64:
                wrong += 1
        result["get_64_ids"] = lat_summary(lat)
        result["get_64_ids"]["wrong_count_calls"] = wrong

        # ---- delete latency (single id per call) ---------------------------
        del_ids = [int(i) for i in rng.choice(
            np.setdiff1d(np.arange(n), up_ids), size=args.deletes, replace=False)]
        lat = []
        for i in del_ids:
            dt, _ = timed(lambda: client.delete(name, ids=[i], timeout=args.rpc_timeout))
            lat.append(dt)
            alive[i] = False
        result["delete_single"] = lat_summary(lat)
        left = client.get(name, ids=del_ids, output_fields=[PK], timeout=args.rpc_timeout)
        result["delete_still_visible_get"] = len(left)
        gone_in_search = 0
        for i in del_ids[:20]:
            res = search(data[i][None, :], limit=1)
            if not res[0] or hit_id(res[0][0]) != i:
                gone_in_search += 1
        result["delete_gone_from_search"] = round(gone_in_search / min(20, len(del_ids)), 4)
        LOG.info("delete: %s", result["delete_single"])
        result["server_mem_end"] = proc_mem(server_pid)
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON
        LOG.exception("benchmark failed")
        result["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        try:
            client.drop_collection(name, timeout=args.rpc_timeout)
        except Exception as exc:  # noqa: BLE001
            result["errors"].append(f"drop_collection: {exc!r}")
        client.close()
    return result


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--uri", default="http://127.0.0.1:19530")
    p.add_argument("--n-items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--json-out", default=None)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--data", choices=["random", "clustered"], default="random",
                   help="random unit vectors (spec default) or clustered ones")
    p.add_argument("--cluster-size", type=int, default=100,
                   help="mean items per cluster for --data clustered")
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--index-type", default="AUTOINDEX")
    p.add_argument("--consistency", default="Strong")
    p.add_argument("--search-params", default="{}",
                   help='JSON index search params, e.g. \'{"ef": 256}\'')
    p.add_argument("--ef-sweep", default="",
                   help="comma list of HNSW ef values to sweep, e.g. 64,128,256")
    p.add_argument("--upserts", type=int, default=200)
    p.add_argument("--batch-upserts", type=int, default=20,
                   help="number of 64-row upsert calls")
    p.add_argument("--deletes", type=int, default=100)
    p.add_argument("--get-repeats", type=int, default=50)
    p.add_argument("--recall-queries", type=int, default=100)
    p.add_argument("--max-throughput-batches", type=int, default=50)
    p.add_argument("--throughput-seconds", type=float, default=60.0)
    p.add_argument("--rpc-timeout", type=float, default=1800.0)
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    result = run(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
