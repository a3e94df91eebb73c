"""encoders.client against the real Triton of the local stack, over HTTP and gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.client import ItemInputs, ItemVectors, TritonClient
from encoders.exceptions import InferenceError
from streams.settings import TritonSettings

pytestmark = pytest.mark.stack

PROTOCOLS = ["http", "grpc"]


def _triton(settings, protocol: str) -> TritonSettings:
    st = settings.stack
    port = st.triton_grpc_port if protocol == "grpc" else st.triton_http_port
    # Generous time-out: a CPU-only stack may be slow on its first batch.
    return TritonSettings(url=f"{st.host}:{port}", protocol=protocol, timeout_s=60.0, max_retries=2)


@pytest.fixture(params=PROTOCOLS)
async def client(request, stack, settings):
    async with TritonClient(_triton(settings, request.param)) as c:
        yield c


def _text(s: str) -> dict[str, np.ndarray]:
    return {"TEXT": np.array([[s.encode("utf-8")]], dtype=np.object_)}


async def test_ready(client):
    assert await client.ready() is True


async def test_model_config_has_the_embedding_dim(client):
    config = await client.model_config("text_encoder")
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["EMBEDDING"]["dims"] == [384]  # ints over both protocols
    assert config["max_batch_size"] >= 1


async def test_encode_texts_gives_unit_vectors(client):
    emb = await client.encode_texts(["a cat video", "a dog video"])
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(emb[0], emb[1])
    # Same text, same vector, whichever batch it lands in.
    again = await client.encode_texts(["a dog video"])
    np.testing.assert_allclose(again[0], emb[1], atol=1e-5)


async def test_infer_many_isolates_bad_requests(client):
    requests = [
        _text("a cat video"),
        {"TEXT": np.zeros((1, 1), dtype=np.float32)},  # wrong datatype: Triton rejects it
        _text("a dog video"),
        _text("   "),  # empty text: the model rejects it, inside a batch with good ones
        _text("music for a rainy day"),
    ]
    results = await client.infer_many("text_encoder", requests, ["EMBEDDING"])
    assert len(results) == 5
    assert isinstance(results[1], InferenceError)
    assert "BYTES" in str(results[1]) or "TYPE_STRING" in str(results[1]) or "data-type" in str(results[1])
    assert isinstance(results[3], InferenceError)
    assert "empty" in str(results[3]).lower()
    for i in (0, 2, 4):
        assert isinstance(results[i], dict), results[i]
        vec = results[i]["EMBEDDING"]
        assert vec.shape == (1, 384)
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
    assert client.breaker.state == "closed"  # rejected requests are not outages


async def test_encode_items_when_item_encoder_is_served(client):
    if not await client.ready("item_encoder"):
        pytest.skip("item_encoder is not loaded in this stack yet")
    rng = np.random.default_rng(0)
    items = [
        ItemInputs("t", "a cat video"),
        ItemInputs("ta", "a song", waveform=(0.1 * rng.standard_normal(16000)).astype(np.float32)),
        ItemInputs("tv", "a clip", frames=rng.integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)),
    ]
    out = await client.encode_items(items)
    assert all(isinstance(o, ItemVectors) for o in out), out
    np.testing.assert_array_equal(out[0].mask, [1, 0, 0])
    np.testing.assert_array_equal(out[1].mask, [1, 1, 0])
    np.testing.assert_array_equal(out[2].mask, [1, 0, 1])
    for o in out:
        assert o.fused.shape == (384,) and np.isfinite(o.fused).all()

