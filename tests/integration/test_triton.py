"""Real Triton (tritonserver 2.51 from the nvidia-pytriton wheel) serving triton_models/."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.stack

MODELS = ["text_encoder", "audio_encoder", "video_encoder", "fusion", "item_encoder"]


@pytest.fixture(scope="module")
def client(stack, settings):
    c = httpclient.InferenceServerClient(f"{settings.stack.host}:{settings.stack.triton_http_port}", concurrency=8)
    yield c
    c.close()


def _text_input(texts: list[str]) -> httpclient.InferInput:
    arr = np.array([[t.encode()] for t in texts], dtype=np.object_)
    inp = httpclient.InferInput("TEXT", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return inp


def test_every_model_in_the_repository_is_ready(client):
    assert client.is_server_ready()
    for name in MODELS:
        assert client.is_model_ready(name), name
    cfg = client.get_model_config("text_encoder")
    assert [int(d) for d in cfg["output"][0]["dims"]] == [384]
    assert "dynamic_batching" in cfg


def test_text_encoder_returns_the_numbers_the_same_weights_give_in_process(client):
    from encoders.text import TextEncoder

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    served = client.infer("text_encoder", [_text_input(texts)]).as_numpy("EMBEDDING")
    local = TextEncoder()(texts).numpy()
    assert served.shape == (3, 384)
    np.testing.assert_allclose(served, local, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    sims = served @ served.T
    # The published all-MiniLM-L6-v2 similarity for this pair is 0.755.
    assert sims[0, 1] == pytest.approx(0.7553, abs=2e-3)
    assert sims[0, 1] > sims[0, 2] + 0.5


def test_a_malformed_request_fails_alone(client):
    good = [client.async_infer("text_encoder", [_text_input([f"video number {i}"])]) for i in range(4)]
    empty = client.async_infer("text_encoder", [_text_input(["   "])])
    results = [g.get_result().as_numpy("EMBEDDING") for g in good]
    assert all(r.shape == (1, 384) for r in results)
    with pytest.raises(InferenceServerException, match="TEXT is empty") as err:
        empty.get_result()
    assert err.value.status() == "400"  # INVALID_ARG: the client must not retry it
