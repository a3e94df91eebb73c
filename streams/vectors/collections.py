"""The two Milvus collections the worker keeps: ``items`` and ``users``.

* ``items``: one row per uploaded item: the fused vector (searched), the
  per-modality vectors (kept for explanations and re-fusion), and the scalar
  fields the ranking filters and explains with.
* ``users``: one row per user with a taste vector, mirrored from the worker's
  state table so that a new upload can find its interested users (fan-out).

Both use COSINE on unit vectors with ``AUTOINDEX``, which Milvus Lite and Milvus
standalone each map to their best default index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from streams.vectors.raw_search import search_ids

from streams.exceptions import VectorStoreError

log = logging.getLogger(__name__)

MODALITY_FIELDS = ("text_vec", "audio_vec", "video_vec")
MAX_ROWS_PER_CALL = 4000
GET_CHUNK = 512
ITEM_SCALARS = ["creator_id", "title", "tags", "created_at", "available", "modalities", "duration_s"]


@dataclass
class Hit:
    id: str
    score: float


def _wrap(what: str, operation: str):
    """Milvus errors become VectorStoreError; each call's duration and outcome go to the collection's
    ``observe(operation, seconds, failed)`` hook when set (the worker's metrics: streams/web/instrument.py)."""

    def deco(fn):
        def inner(self, *args, **kwargs):
            observe = self.observe
            t0 = time.perf_counter()
            failed = True  # until fn returns: a gRPC error of the raw search path is a failed call too
            try:
                result = fn(self, *args, **kwargs)
                failed = False
                return result
            except MilvusException as exc:
                raise VectorStoreError(f"Milvus {what} failed: {exc.message}") from exc
            finally:
                if observe is not None:
                    observe(operation, time.perf_counter() - t0, failed)

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return deco


class ItemCollection:
    """Items: fused + per-modality vectors and scalar fields."""

    # observe(operation, seconds, failed) per call when set; see _wrap.
    observe: Callable[[str, float, bool], None] | None = None

    def __init__(self, client: MilvusClient, name: str, dim: int, timeout_s: float | None = None) -> None:
        self.client, self.name, self.dim = client, name, dim
        self.timeout_s = timeout_s  # deadline of the raw search path (the client's own calls carry theirs)

    @_wrap("create items collection", "ensure")
    def ensure(self) -> None:
        if self.client.has_collection(self.name):
            self.client.load_collection(self.name)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        for f in MODALITY_FIELDS:
            schema.add_field(f, DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("creator_id", DataType.VARCHAR, max_length=128)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("tags", DataType.VARCHAR, max_length=4096)  # space-separated
        schema.add_field("created_at", DataType.INT64)  # unix milliseconds
        schema.add_field("available", DataType.BOOL)
        schema.add_field("modalities", DataType.VARCHAR, max_length=32)  # e.g. "text,audio,video"
        schema.add_field("duration_s", DataType.FLOAT)  # 0 when unknown; scales view weights by watch ratio
        index = self.client.prepare_index_params()
        for f in ("vector", *MODALITY_FIELDS):
            index.add_index(field_name=f, index_type="AUTOINDEX", metric_type="COSINE")
        self.client.create_collection(self.name, schema=schema, index_params=index)
        log.info("created Milvus collection %s (dim %d)", self.name, self.dim)

    @_wrap("upsert items", "upsert")
    def upsert(self, rows: Sequence[dict]) -> int:
        done = 0
        # Milvus Lite 2.5 slows down ~20x for single calls above ~4,600 rows (measured): chunk.
        for start in range(0, len(rows), MAX_ROWS_PER_CALL):
            chunk = list(rows[start : start + MAX_ROWS_PER_CALL])
            done += int(self.client.upsert(self.name, chunk).get("upsert_count", len(chunk)))
        return done

    @_wrap("get items", "get")
    def get(self, item_ids: Iterable[str], modality_vectors: bool = False) -> dict[str, dict]:
        """Rows by id: scalars and the fused vector (per-modality vectors on request).

        Chunked: Milvus caps the size of one query result, and four 384-d vectors
        per row reach that cap at a few thousand rows.
        """
        ids = list(dict.fromkeys(item_ids))
        fields = ITEM_SCALARS + ["vector"] + (list(MODALITY_FIELDS) if modality_vectors else [])
        out: dict[str, dict] = {}
        for start in range(0, len(ids), GET_CHUNK):
            for r in self.client.get(self.name, ids=ids[start : start + GET_CHUNK], output_fields=fields):
                out[r["item_id"]] = r
        return out

    def scan_pages(self, page_size: int = 1000) -> Iterator[list[dict]]:
        """Every row (scalars and the fused vector, like :meth:`get`), a page at a time, in the
        collection's order: a generator, each ``next`` one Milvus round trip (run it in a thread)."""
        it = None
        try:
            it = self.client.query_iterator(self.name, batch_size=page_size, filter="",
                                            output_fields=ITEM_SCALARS + ["vector"])
            while page := it.next():
                yield page
        except MilvusException as exc:
            raise VectorStoreError(f"Milvus scan of {self.name} failed: {exc.message}") from exc
        finally:
            if it is not None:
                it.close()

    @_wrap("search items", "search")
    def search_ids(self, vectors: np.ndarray, limit: int, only_available: bool = True) -> list[list[tuple[str, float]]]:
        """Batched ANN search (nq = len(vectors)) over the fused vectors: (id, similarity) pairs, best first.

        Vectors are deliberately not returned with the hits: pymilvus turns every
        float into a Python object, and nq x limit x 384 of them (measured: 200 x 200
        hits) stalled a batch for tens of seconds. The worker's item cache holds them.
        """
        return search_ids(self.client, self.name, "vector", vectors, limit,
                          "available == true" if only_available else "", self.timeout_s)

    @_wrap("query fresh items", "query")
    def fresh(self, since_ms: int, limit: int) -> list[dict]:
        """Items uploaded since ``since_ms`` (newest first, at most ``limit``)."""
        rows = self.client.query(
            self.name, filter=f"created_at >= {int(since_ms)} and available == true",
            output_fields=["item_id", "created_at", "creator_id"], limit=max(limit * 4, limit),
        )
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return rows[:limit]

    @_wrap("delete items", "delete")
    def delete(self, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        if ids:
            self.client.delete(self.name, ids=ids)

    @_wrap("drop items collection", "drop")
    def drop(self) -> None:
        self.client.drop_collection(self.name)


class UserCollection:
    """Users: taste vectors mirrored from the state table, searched by new items (fan-out)."""

    # observe(operation, seconds, failed) per call when set; see _wrap.
    observe: Callable[[str, float, bool], None] | None = None

    def __init__(self, client: MilvusClient, name: str, dim: int, timeout_s: float | None = None) -> None:
        self.client, self.name, self.dim = client, name, dim
        self.timeout_s = timeout_s  # deadline of the raw search path (the client's own calls carry theirs)

    @_wrap("create users collection", "ensure")
    def ensure(self) -> None:
        if self.client.has_collection(self.name):
            self.client.load_collection(self.name)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("user_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("updated_at", DataType.INT64)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        self.client.create_collection(self.name, schema=schema, index_params=index)
        log.info("created Milvus collection %s (dim %d)", self.name, self.dim)

    @_wrap("upsert users", "upsert")
    def upsert(self, vectors: dict[str, np.ndarray], updated_ms: int) -> None:
        rows = [{"user_id": u, "vector": np.asarray(v, np.float32).tolist(), "updated_at": updated_ms}
                for u, v in vectors.items()]
        for start in range(0, len(rows), MAX_ROWS_PER_CALL):
            self.client.upsert(self.name, rows[start : start + MAX_ROWS_PER_CALL])

    @_wrap("search users", "search")
    def search(self, vectors: np.ndarray, limit: int) -> list[list[Hit]]:
        """The users closest to each of ``vectors`` (new items' fan-out), best first."""
        rows = search_ids(self.client, self.name, "vector", vectors, limit, "", self.timeout_s)
        return [[Hit(i, s) for i, s in row] for row in rows]

    @_wrap("delete users", "delete")
    def delete(self, user_ids: Iterable[str]) -> None:
        ids = list(user_ids)
        if ids:
            self.client.delete(self.name, ids=ids)

    @_wrap("drop users collection", "drop")
    def drop(self) -> None:
        self.client.drop_collection(self.name)
