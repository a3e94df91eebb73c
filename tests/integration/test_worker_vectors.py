"""The worker's own Milvus paths against the real Milvus: the plain-id search and the user-vector mirror."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streams.settings import WorkerSettings
from streams.services.user_mirror import UserVectorMirror
from streams.vectors.collections import ItemCollection, UserCollection
from streams.vectors.milvus import milvus_client

pytestmark = pytest.mark.stack
DIM = 16


@pytest.fixture
def client(stack, settings):
    c = milvus_client(settings.milvus)
    yield c
    c.close()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


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
    finally:
        users.drop()
