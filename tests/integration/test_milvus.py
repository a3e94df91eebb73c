"""Real Milvus (Lite, server mode) from the local stack: the collection life cycle the worker relies on."""

from __future__ import annotations

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

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
