"""Content understanding through the real Triton: text, real MicroLens media, fusion, errors, checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from encoders.media import MediaResolver, decode_audio, decode_video_frames
from tests.mediagen import transcode

pytestmark = pytest.mark.stack
CLIPS = ["1002", "10034", "10040"]
OUTPUTS = ["FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB", "MASK"]


@pytest.fixture(scope="module")
def client(stack, settings):
    c = httpclient.InferenceServerClient(f"{settings.stack.host}:{settings.stack.triton_http_port}", concurrency=8)
    yield c
    c.close()


def item_inputs(text: str | None = None, wav: np.ndarray | None = None, frames: np.ndarray | None = None):
    inputs = []
    if text is not None:
        arr = np.array([[text.encode()]], dtype=np.object_)
        inputs.append(httpclient.InferInput("TEXT", [1, 1], "BYTES"))
        inputs[-1].set_data_from_numpy(arr)
    if wav is not None:
        inputs.append(httpclient.InferInput("WAVEFORM", [1, wav.size], "FP32"))
        inputs[-1].set_data_from_numpy(wav.astype(np.float32)[None])
    if frames is not None:
        inputs.append(httpclient.InferInput("FRAMES", [1, *frames.shape], "UINT8"))
        inputs[-1].set_data_from_numpy(frames[None])
    return inputs


def encode_item(client, **kw) -> dict[str, np.ndarray]:
    res = client.infer("item_encoder", item_inputs(**kw))
    return {name: res.as_numpy(name)[0] for name in OUTPUTS}


def test_text_paraphrase_scores_above_unrelated(client):
    texts = ["A cat is playing with a ball of yarn.", "A kitten plays with yarn.", "The central bank raised rates."]
    arr = np.array([[t.encode()] for t in texts], dtype=np.object_)
    inp = httpclient.InferInput("TEXT", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    e = client.infer("text_encoder", [inp]).as_numpy("EMBEDDING")
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_text_only_item_is_its_text_vector(client):
    out = encode_item(client, text="lofi beats to study to")
    np.testing.assert_array_equal(out["MASK"], [1, 0, 0])
    np.testing.assert_allclose(out["FUSED"], out["TEXT_EMB"], atol=1e-6)
    assert not out["AUDIO_EMB"].any() and not out["VIDEO_EMB"].any()


@pytest.fixture(scope="module")
def microlens(shared_data, tmp_path_factory):
    """Each real clip decoded as uploaded and after a re-encode (smaller, lower bitrate)."""
    resolver = MediaResolver([shared_data, Path("/tmp")], [], 500 * 2**20, 30.0)
    out = {}
    work = tmp_path_factory.mktemp("transcodes")
    for clip in CLIPS:
        original = shared_data / "microlens-sample" / f"{clip}.mp4"
        copy = transcode(original, work / f"{clip}.mp4")
        decoded = []
        for path in (original, copy):
            src = resolver.fetch(path.as_uri())
            decoded.append((decode_audio(src, max_seconds=30.0), decode_video_frames(src, num_frames=8, size=112)))
        out[clip] = decoded
    return out


@pytest.mark.shared_data
def test_microlens_videos_encode_and_survive_a_transcode(client, microlens):
    vectors = {}
    for clip, ((wav, frames), (wav2, frames2)) in microlens.items():
        a = encode_item(client, text=f"micro video {clip}", wav=wav, frames=frames)
        b = encode_item(client, text=f"micro video {clip}", wav=wav2, frames=frames2)
        for out in (a, b):
            np.testing.assert_array_equal(out["MASK"], [1, 1, 1])
            for name in ("FUSED", "TEXT_EMB", "AUDIO_EMB", "VIDEO_EMB"):
                assert np.isfinite(out[name]).all()
                assert np.linalg.norm(out[name]) == pytest.approx(1.0, abs=1e-4)
        for name in ("AUDIO_EMB", "VIDEO_EMB", "FUSED"):
            assert float(a[name] @ b[name]) > 0.9, (clip, name)
        vectors[clip] = a
    # Different clips stay clearly apart in what they look and sound like.
    for i, x in enumerate(CLIPS):
        for y in CLIPS[i + 1:]:
            assert float(vectors[x]["VIDEO_EMB"] @ vectors[y]["VIDEO_EMB"]) < 0.8, (x, y)
            assert float(vectors[x]["AUDIO_EMB"] @ vectors[y]["AUDIO_EMB"]) < 0.8, (x, y)


def test_malformed_item_fails_alone_in_a_batch(client):
    rng = np.random.default_rng(0)
    good = [
        client.async_infer("item_encoder", item_inputs(
            text=f"clip {i}", wav=rng.uniform(-0.2, 0.2, 16_000).astype(np.float32),
            frames=rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)))
        for i in range(4)
    ]
    bad_frames = client.async_infer("item_encoder", item_inputs(
        text="bad", frames=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)))
    nan_audio = client.async_infer("item_encoder", item_inputs(text="nan", wav=np.full(16_000, np.nan)))
    nothing = client.async_infer("item_encoder", item_inputs(text="   "))
    for g in good:
        assert g.get_result().as_numpy("FUSED").shape == (1, 384)
    for req, message in ((bad_frames, "FRAMES are 8x8"), (nan_audio, "NaN"), (nothing, "at least one of")):
        with pytest.raises(InferenceServerException, match=message) as err:
            req.get_result()
        assert err.value.status() == "400"


def test_checkpoint_configured_by_env_is_what_triton_serves(settings, tmp_path):
    """Save a checkpoint, configure it, start a second Triton with it, and get the saved network's outputs."""
    import torch

    from deploy.local.stack import LocalStack
    from encoders.audio import AudioEncoder, ConvAudioTower
    from encoders.checkpoints import save_safetensors
    from streams.settings import Settings

    torch.manual_seed(0)
    net = ConvAudioTower(channels=16, out_dim=384).eval()
    path = save_safetensors(net, tmp_path / "audio.safetensors", "conv_audio", channels=16, out_dim=384)
    wav = np.sin(np.arange(16_000) * 2 * np.pi * 330 / 16_000).astype(np.float32) * 0.3
    expected = AudioEncoder(384, checkpoint=path)([torch.from_numpy(wav)]).numpy()

    base = 38100
    env = {"AVREC_ENCODERS__AUDIO_CHECKPOINT": str(path)}
    other = Settings(stack={
        "state_dir": tmp_path / "state", "triton_http_port": base, "triton_grpc_port": base + 1,
        "triton_metrics_port": base + 2,
    })
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    local = LocalStack(other, ["triton"])
    try:
        local.up()
        c = httpclient.InferenceServerClient(f"127.0.0.1:{base}")
        inp = httpclient.InferInput("WAVEFORM", [1, wav.size], "FP32")
        inp.set_data_from_numpy(wav[None])
        served = c.infer("audio_encoder", [inp]).as_numpy("EMBEDDING")
        c.close()
    finally:
        local.down()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    np.testing.assert_allclose(served, expected, atol=1e-5)
