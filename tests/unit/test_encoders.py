"""Every tower through one contract, plus what is specific to each (in-process, no stack).

The serving path (Triton) is tested in tests/integration/test_encoders_triton.py;
here we pin down the modules Triton runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.audio import AudioEncoder, ConvAudioTower, LogMel
from encoders.checkpoints import save_safetensors
from encoders.exceptions import CheckpointError
from encoders.fusion import AttentionFusion, Fusion
from encoders.video import ConvFrameTower, VideoEncoder

SR = 16_000
rng = np.random.default_rng(0)


def tone(hz: float, seconds: float = 1.0, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * hz * t) + noise * np.random.default_rng(seed).standard_normal(t.size)
    return torch.from_numpy(x.astype(np.float32))


def clip(kind: str, n: int = 6, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(n):
        if kind == "red-gradient":
            img = np.stack([xx * 255 / size, yy * 60 / size, np.full_like(xx, 20)], -1)
        elif kind == "blue-stripes":
            img = np.stack([np.full_like(xx, 10), ((xx + 3 * i) // 4 % 2) * 120, np.full_like(xx, 200)], -1)
        else:  # noise
            img = g.integers(0, 255, (size, size, 3))
        frames.append(img)
    return torch.from_numpy(np.clip(np.stack(frames), 0, 255).astype(np.uint8))


class TowerContract:
    """What every tower promises: shape, unit norm, determinism, batch independence."""

    def make(self):
        raise NotImplementedError

    def inputs(self) -> list:
        raise NotImplementedError

    def test_shape_finite_unit_norm(self):
        tower = self.make()
        out = tower(self.inputs())
        assert out.shape == (len(self.inputs()), tower.dim)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(out.shape[0]), atol=1e-5, rtol=0)

    def test_deterministic_across_instances(self):
        torch.testing.assert_close(self.make()(self.inputs()), self.make()(self.inputs()))

    def test_batch_independent(self):
        tower, xs = self.make(), self.inputs()
        batch = tower(xs)
        one_by_one = torch.cat([tower([x]) for x in xs])
        torch.testing.assert_close(batch, one_by_one, atol=1e-5, rtol=1e-4)

    def test_weights_info_is_honest(self):
        info = self.make().weights
        assert info.pretrained == (info.source != "built-in")


class TestTextTower(TowerContract):
    _tower = None

    def make(self):
        from encoders.text import TextEncoder

        if TestTextTower._tower is None:
            TestTextTower._tower = TextEncoder()
        return TestTextTower._tower

    def inputs(self):
        return ["a cat chasing a laser pointer", "piano cover of a pop song", "x"]

    def test_matches_transformers_bert_on_the_same_weights(self):
        transformers = pytest.importorskip("transformers")
        from encoders.text import bundled_model_dir

        tower = self.make()
        ref = transformers.BertModel.from_pretrained(str(bundled_model_dir()), local_files_only=True).eval()
        ids, mask = tower.tokenize(self.inputs())
        with torch.no_grad():
            h = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        torch.testing.assert_close(tower(self.inputs()), expected, atol=1e-5, rtol=0)

    def test_paraphrase_closer_than_unrelated(self):
        e = self.make()(["A man is playing the guitar.", "Someone strums a guitar.", "Stock markets fell today."])
        assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3


class TestAudioBuiltin(TowerContract):
    def make(self):
        return AudioEncoder(dim=384)

    def inputs(self):
        return [tone(440), tone(3000, 1.5), tone(220, 0.7, noise=0.05)]

    def test_same_sound_close_different_sounds_far(self):
        tower = self.make()
        quiet_copy = tone(440, noise=0.002, seed=5) * 0.5  # same tone, other level, a little noise
        e = tower([tone(440), quiet_copy, tone(3000), tone(0, noise=0.3, seed=1)])
        assert float(e[0] @ e[1]) > 0.9
        assert float(e[0] @ e[2]) < 0.8
        assert float(e[0] @ e[3]) < 0.8

    def test_logmel_peaks_at_the_tone(self):
        mel = LogMel()(tone(1000))
        low = LogMel()(tone(200))
        assert mel.mean(1).argmax() > low.mean(1).argmax()


class TestVideoBuiltin(TowerContract):
    def make(self):
        return VideoEncoder(dim=384)

    def inputs(self):
        return [clip("red-gradient"), clip("blue-stripes", n=4), clip("noise", size=48)]

    def test_same_clip_resized_close_different_clips_far(self):
        tower = self.make()
        red = clip("red-gradient", size=96)
        smaller = torch.nn.functional.interpolate(red.permute(0, 3, 1, 2).float(), size=(64, 64), mode="area")
        smaller = smaller.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        e = tower([red, smaller, clip("blue-stripes", size=96)])
        assert float(e[0] @ e[1]) > 0.9
        assert float(e[0] @ e[2]) < 0.6


class TestAudioCheckpoint(TowerContract):
    @pytest.fixture(autouse=True)
    def _ckpt(self, tmp_path):
        torch.manual_seed(0)
        self.net = ConvAudioTower(channels=16, out_dim=384).eval()
        self.path = save_safetensors(self.net, tmp_path / "audio.safetensors", "conv_audio", channels=16, out_dim=384)

    def make(self):
        return AudioEncoder(dim=384, checkpoint=self.path)

    def inputs(self):
        return [tone(440), tone(880, 2.0)]

    def test_round_trip_gives_the_saved_networks_outputs(self):
        tower = self.make()
        mel = LogMel()(tone(440))
        with torch.no_grad():
            expected = torch.nn.functional.normalize(self.net(mel[None]), dim=-1)
        torch.testing.assert_close(tower([tone(440)]), expected, atol=1e-5, rtol=0)
        assert tower.weights.pretrained and tower.weights.source == str(self.path)


class TestVideoTorchScriptCheckpoint(TowerContract):
    @pytest.fixture(autouse=True)
    def _ckpt(self, tmp_path):
        torch.manual_seed(1)
        self.net = ConvFrameTower(channels=8, out_dim=128).eval()
        self.path = tmp_path / "frames.pt"
        torch.jit.save(torch.jit.script(self.net), str(self.path))

    def make(self):
        return VideoEncoder(dim=384, checkpoint=self.path)

    def inputs(self):
        return [clip("red-gradient"), clip("blue-stripes", n=3)]

    def test_round_trip_gives_the_saved_networks_outputs(self):
        from encoders.base import fixed_projection

        tower = self.make()
        x = clip("red-gradient")
        with torch.no_grad():
            feats = self.net(x.permute(0, 3, 1, 2).float() / 255).mean(0, keepdim=True)
        expected = torch.nn.functional.normalize(feats @ fixed_projection(128, 384, seed=2002), dim=-1)
        torch.testing.assert_close(tower([x]), expected, atol=1e-5, rtol=0)


def test_hf_clip_vision_directory_loads_offline(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=24,
    )
    torch.manual_seed(2)
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    model.save_pretrained(str(tmp_path / "clip"))
    tower = VideoEncoder(dim=384, checkpoint=tmp_path / "clip")
    x = clip("red-gradient", size=32)
    out = tower([x])
    assert out.shape == (1, 384) and tower.weights.pretrained
    with torch.no_grad():
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        emb = model(pixel_values=(x.permute(0, 3, 1, 2).float() / 255 - mean) / std).image_embeds.mean(0, keepdim=True)
    from encoders.base import fixed_projection

    expected = torch.nn.functional.normalize(emb @ fixed_projection(24, 384, seed=2002), dim=-1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "setup", "message"),
    [
        ("missing.safetensors", None, "does not exist"),
        ("weights.bin", "touch", "unknown format"),
        ("nosidecar.safetensors", "tensor", "no sidecar"),
        ("corrupt.pt", "garbage", "could not be loaded"),
    ],
)
def test_bad_checkpoints_fail_with_a_fix(tmp_path, name, setup, message):
    path = tmp_path / name
    if setup == "touch":
        path.write_bytes(b"")
    elif setup == "tensor":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    elif setup == "garbage":
        path.write_bytes(b"not a torchscript archive")
    with pytest.raises(CheckpointError, match=message):
        AudioEncoder(checkpoint=path)


class TestFusion:
    def _vectors(self, b: int = 4) -> torch.Tensor:
        v = torch.randn(b, 3, 384, generator=torch.Generator().manual_seed(3))
        return torch.nn.functional.normalize(v, dim=-1)

    def test_text_only_item_gets_its_text_vector(self):
        v = self._vectors(1)
        fused, projected, weights = Fusion()(v, torch.tensor([[1.0, 0.0, 0.0]]))
        torch.testing.assert_close(fused, v[:, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0, 0.0]]))
        assert projected[0, 1:].abs().sum() == 0  # missing modalities are zeroed, not leaked

    def test_default_is_the_normalised_mean_of_present_modalities(self):
        v = self._vectors(2)
        mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
        fused, _, weights = Fusion()(v, mask)
        torch.testing.assert_close(weights[0], torch.full((3,), 1 / 3))
        torch.testing.assert_close(weights[1], torch.tensor([0.0, 0.5, 0.5]))
        expected = torch.nn.functional.normalize(v[1, 1:].mean(0), dim=-1)
        torch.testing.assert_close(fused[1], expected, atol=1e-6, rtol=0)

    def test_no_modality_gives_zero_weights_not_nan(self):
        fused, _, weights = Fusion()(self._vectors(1), torch.zeros(1, 3))
        assert torch.isfinite(fused).all() and weights.sum() == 0

    def test_learned_checkpoint_round_trip(self, tmp_path):
        torch.manual_seed(4)
        learned = AttentionFusion(384)
        with torch.no_grad():
            for p in learned.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        path = save_safetensors(learned, tmp_path / "fusion.safetensors", "fusion", dim=384)
        loaded = Fusion(384, checkpoint=path)
        v, mask = self._vectors(3), torch.tensor([[1.0, 1, 1], [1, 0, 1], [0, 1, 0]])
        with torch.no_grad():
            expected = learned.eval()(v, mask)
        for got, want in zip(loaded(v, mask), expected):
            torch.testing.assert_close(got, want)
        # The learned attention is not the untrained equal split.
        assert not torch.allclose(expected[2][0], torch.full((3,), 1 / 3), atol=1e-3)
