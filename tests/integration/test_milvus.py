"""Real Milvus (Lite, server mode) from the local stack: the collection life cycle the worker relies on,
its plain-id search, and the user-vector mirror."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from streams.services.user_mirror import UserVectorMirror
from streams.settings import WorkerSettings
from streams.vectors.collections import ItemCollection, UserCollection
from streams.vectors.milvus import milvus_client

pytestmark = pytest.mark.stack
DIM = 32


@pytest.fixture
def client(stack, settings):
    c = milvus_client(settings.milvus)
    yield c
    c.close()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _item_row(item_id: str, vec: np.ndarray, **fields) -> dict:
    """An ``items`` row with a text-only fused vector; ``fields`` override the scalars."""
    zeros = [0.0] * DIM
    return {"item_id": item_id, "vector": vec.tolist(), "text_vec": zeros, "audio_vec": zeros, "video_vec": zeros,
            "creator_id": "c", "title": "", "tags": "", "created_at": 0, "available": True, "modalities": "text",
            "duration_s": 0.0, **fields}


def _create(client: MilvusClient, name: str) -> None:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("creator", DataType.VARCHAR, max_length=64)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)


def test_collection_create_insert_upsert_search_delete_drop(client, unique):
    name = f"test_items_{unique}"
    rng = np.random.default_rng(7)
    _create(client, name)
    assert client.has_collection(name)
    vecs = _unit(rng, 200)
    rows = [{"item_id": f"i{i}", "vector": vecs[i].tolist(), "creator": f"c{i % 4}"} for i in range(200)]
    assert client.insert(name, rows)["insert_count"] == 200

    # Search finds each vector itself first, with cosine ~1.
    hits = client.search(name, data=vecs[:5].tolist(), limit=3, output_fields=["creator"])
    for i, row in enumerate(hits):
        assert row[0].id == f"i{i}"
        assert row[0]["distance"] == pytest.approx(1.0, abs=1e-4)
        assert row[0]["entity"]["creator"] == f"c{i % 4}"

    # Upsert replaces item i0's vector with item i199's direction: a search for i199 now finds both.
    client.upsert(name, [{"item_id": "i0", "vector": vecs[199].tolist(), "creator": "moved"}])
    got = client.get(name, ids=["i0"], output_fields=["creator", "vector"])
    assert got[0]["creator"] == "moved"
    np.testing.assert_allclose(got[0]["vector"], vecs[199], atol=1e-6)
    top = {h.id for h in client.search(name, data=[vecs[199].tolist()], limit=2)[0]}
    assert top == {"i0", "i199"}

    # Scalar filter in a search.
    filtered = client.search(name, data=[vecs[3].tolist()], limit=10, filter='creator == "c3"',
                             output_fields=["creator"])[0]
    assert filtered and all(h["entity"]["creator"] == "c3" for h in filtered)

    client.delete(name, ids=["i1", "i2"])
    assert client.get(name, ids=["i1", "i2"]) == []
    after = client.search(name, data=[vecs[1].tolist()], limit=5)[0]
    assert "i1" not in {h.id for h in after}

    client.drop_collection(name)
    assert not client.has_collection(name)


def test_plain_id_search_matches_pymilvus_search(client, unique):
    items = ItemCollection(client, f"test_items_{unique}", DIM, timeout_s=30)
    items.ensure()
    try:
        rng = np.random.default_rng(3)
        vecs = _unit(rng, 300)
        items.upsert([_item_row(f"i{k}", vecs[k], available=k % 10 != 0) for k in range(300)])
        queries = _unit(rng, 5)
        fast = items.search_ids(queries, 20)
        slow = client.search(items.name, data=queries.tolist(), anns_field="vector", limit=20,
                             filter="available == true")
        assert len(fast) == 5
        for mine, theirs in zip(fast, slow):
            assert [i for i, _ in mine] == [str(h.id) for h in theirs]
            assert np.allclose([s for _, s in mine], [h["distance"] for h in theirs], atol=1e-6)
            assert all(int(i[1:]) % 10 != 0 for i, _ in mine)  # the availability filter applies
        # The exact top hit of an item's own vector is that item.
        assert items.search_ids(vecs[1:2], 1)[0][0][0] == "i1"
        assert items.search_ids(np.zeros((0, DIM), np.float32), 5) == []
    finally:
        items.drop()


def test_user_mirror_coalesces_writes_and_never_writes_back_a_discarded_user(client, unique):
    users = UserCollection(client, f"test_users_{unique}", DIM)
    users.ensure()
    rng = np.random.default_rng(5)
    v = _unit(rng, 4)

    async def scenario() -> UserVectorMirror:
        mirror = UserVectorMirror(users, WorkerSettings())
        mirror.offer({"a": v[0]})
        mirror.offer({"a": v[1], "b": v[2]})  # a's newer vector supersedes the pending one
        mirror.offer({"gone": v[3]})
        mirror.discard("gone")  # forgotten before its write: must never reach Milvus
        await mirror.drain()
        return mirror

    try:
        mirror = asyncio.run(scenario())
        rows = {r["user_id"]: r for r in client.get(users.name, ids=["a", "b", "gone"], output_fields=["vector"])}
        assert set(rows) == {"a", "b"}
        assert np.allclose(rows["a"]["vector"], v[1], atol=1e-6)
        assert np.allclose(rows["b"]["vector"], v[2], atol=1e-6)
        assert mirror.rows_written <= 3  # coalesced: never one write per offer per user
        top = users.search(v[1:2], 2)[0]  # the fan-out's search: a's vector finds a first
        assert [h.id for h in top] == ["a", "b"] and top[0].score == pytest.approx(1.0, abs=1e-5)
    finally:
        users.drop()


async def test_item_cache_warm_up_reads_the_popular_items_first_then_the_catalogue(client, unique):
    """streams/services/cache_warm.py on a real collection: popular items first, then the rest, up to 90%
    of the cache's bound; rows identical to what a read fetches; no read counted; a dropped item stays out."""
    from streams.services.cache_warm import most_popular, warm_item_cache
    from streams.services.items import ItemCache

    items = ItemCollection(client, f"test_warm_{unique}", DIM, timeout_s=30)
    items.ensure()
    try:
        rng = np.random.default_rng(5)
        vecs = _unit(rng, 120)
        items.upsert([_item_row(f"w{k:03d}", vecs[k], creator_id=f"c{k % 7}", title=f"t{k}",
                                created_at=1_700_000_000_000 + k, duration_s=float(k % 3)) for k in range(120)])
        pops = {f"w{k:03d}": float(k) for k in range(100, 120)}  # w119 the most popular
        pops["not-in-milvus"] = 1000.0  # known to the item state, gone from the catalogue: skipped
        assert most_popular(pops, 3) == ["not-in-milvus", "w119", "w118"]

        small = ItemCache(items, 50)  # room for 45: the 20 popular, then 25 in the collection's order
        small.collection = _DroppedWhileRead(items, small)
        added = await warm_item_cache(small, most_popular(pops, 50), page=16)
        assert added == len(small) == 45
        assert all(f"w{k:03d}" in small for k in range(100, 120))
        assert small.collection.dropped  # a row of the scan was dropped while its page was in flight...
        assert not set(small.collection.dropped) & {*small._items}  # ...so its stale row was not cached
        assert "not-in-milvus" not in small
        assert small.hits == small.misses == 0  # a warm-up is not a read

        full = ItemCache(items, 1000)  # room for all
        assert await warm_item_cache(full, [], page=32) == 120
        fetched = ItemCache(items, 1000)
        got = await fetched.get_many([f"w{k:03d}" for k in range(120)])
        warm = await full.get_many([f"w{k:03d}" for k in range(120)])
        assert full.misses == 0 and full.hits == 120  # every read now served from the cache
        for iid, info in got.items():  # the same entries a read would have made
            w = warm[iid]
            assert (w.creator_id, w.title, w.created_at, w.available) == \
                (info.creator_id, info.title, info.created_at, info.available)
            np.testing.assert_array_equal(np.asarray(w.vector), np.asarray(info.vector))
            assert full.duration(iid) == fetched.duration(iid)
    finally:
        client.drop_collection(items.name)


class _DroppedWhileRead:
    """An item collection whose scan drops (invalidates) the first row of each page in the cache while
    the page is on its way, as an upload or a takedown landing during the read would."""

    def __init__(self, items: ItemCollection, cache) -> None:
        self.items, self.cache, self.dropped = items, cache, []

    def get(self, ids):
        return self.items.get(ids)

    def scan_pages(self, page_size: int):
        for page in self.items.scan_pages(page_size):
            first = page[0]["item_id"]
            if first not in self.cache:
                self.cache.invalidate(first, None)
                self.dropped.append(first)
            yield page
