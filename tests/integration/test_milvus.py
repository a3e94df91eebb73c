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
        zeros = [0.0] * DIM
        items.upsert([{"item_id": f"i{k}", "vector": vecs[k].tolist(), "text_vec": zeros, "audio_vec": zeros,
                       "video_vec": zeros, "creator_id": "c", "title": "", "tags": "", "created_at": 0,
                       "available": k % 10 != 0, "modalities": "text", "duration_s": 0.0} for k in range(300)])
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
