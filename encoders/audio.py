"""Audio tower: 16 kHz mono waveform -> log-mel -> audio features -> shared space.

With a checkpoint (``AVREC_ENCODERS__AUDIO_CHECKPOINT``) the features come from
the loaded network. Without one, :class:`SpectralStats` computes a documented,
deterministic content descriptor (no random weights):

* **spectral shape**: the time-averaged log-mel spectrum with its linear tilt
  removed (the tilt is common to nearly all natural audio and would make every
  clip look alike; what remains is the timbre);
* **spectral dynamics**: the per-band standard deviation over time, detrended
  the same way;
* **modulation**: how the loudness envelope fluctuates at 0.5-8 Hz (speech,
  music beats and silence differ), from the envelope's spectrum;
* **summary**: spectral centroid, bandwidth, flatness and level statistics.

Each block is centred and L2-normalised, so every block weighs the same, then a
fixed orthonormal projection maps the concatenation into the D-dim shared space.
Re-encoding a clip (e.g. AAC at another bitrate) barely moves these statistics,
so the same clip lands close (cosine > 0.9) while different clips differ.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import WeightsInfo, fixed_projection, l2_normalize
from encoders.checkpoints import load_checkpoint, register_arch

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms windows
HOP = 160  # 10 ms hop
N_MELS = 64


def mel_filterbank(n_fft: int = N_FFT, n_mels: int = N_MELS, sr: int = SAMPLE_RATE,
                   fmin: float = 50.0, fmax: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters [n_fft//2+1, n_mels]."""
    fmax = fmax or sr / 2

    def hz_to_mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0).T.to(torch.float32).contiguous()


class LogMel(nn.Module):
    """Waveform [T] -> log-mel [n_mels, frames] (natural log of power, floored)."""

    def __init__(self, n_mels: int = N_MELS) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_mels=n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.numel() < N_FFT:
            wav = F.pad(wav, (0, N_FFT - wav.numel()))
        spec = torch.stft(wav, N_FFT, HOP, window=self.window, center=True, return_complex=True)
        power = spec.abs().pow(2)  # [freq, frames]
        return torch.log(self.fb.T @ power + 1e-6)


def _detrend(x: torch.Tensor) -> torch.Tensor:
    """Remove the least-squares line across the last dimension (the spectral tilt)."""
    n = x.shape[-1]
    t = torch.linspace(-1.0, 1.0, n, dtype=x.dtype)
    slope = (x * t).sum(-1, keepdim=True) / (t * t).sum()
    return x - x.mean(-1, keepdim=True) - slope * t


class SpectralStats(nn.Module):
    """The built-in, deterministic audio descriptor (see the module docstring)."""

    N_MOD_BANDS = 16

    def __init__(self, n_mels: int = N_MELS) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.out_dim = 2 * n_mels + self.N_MOD_BANDS + 8
        centers = torch.linspace(0, SAMPLE_RATE / 2, n_mels)
        self.register_buffer("centers", centers / centers.max(), persistent=False)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [n_mels, frames] -> features [out_dim]."""
        shape = _detrend(logmel.mean(1))
        dyn = _detrend(logmel.std(1, unbiased=False))
        energy = logmel.logsumexp(0)  # per-frame log energy
        env = energy - energy.mean()
        # Envelope spectrum at 100 frames/s, bands from 0.5 to 8 Hz: rhythm and speech syllables.
        n = max(env.numel(), 256)
        mag = torch.fft.rfft(F.pad(env, (0, n - env.numel())), n=n).abs()
        freqs = torch.fft.rfftfreq(n, d=HOP / SAMPLE_RATE)
        edges = torch.logspace(math.log10(0.5), math.log10(8.0), self.N_MOD_BANDS + 1)
        mod = torch.stack([
            mag[(freqs >= lo) & (freqs < hi)].mean() if ((freqs >= lo) & (freqs < hi)).any() else mag.new_zeros(())
            for lo, hi in zip(edges[:-1], edges[1:])
        ])
        mod = torch.log1p(mod) - torch.log1p(mod).mean()
        p = torch.softmax(logmel.mean(1), 0)  # normalised mean spectrum as a distribution over bands
        centroid = (p * self.centers).sum()
        bandwidth = ((p * (self.centers - centroid) ** 2).sum()).sqrt()
        flatness = torch.exp(torch.log(p + 1e-12).mean()) / p.mean()
        summary = torch.stack([
            centroid - 0.3, bandwidth - 0.2, flatness - 0.5,
            (energy.mean() - 5.0) / 5.0, energy.std(unbiased=False) / 5.0 - 0.3,
            (energy > energy.max() - 3.0).float().mean() - 0.5,  # share of loud frames
            (env[1:] - env[:-1]).abs().mean() / 2.0 - 0.3,  # frame-to-frame change
            (logmel.max(0).values - logmel.mean(0)).mean() / 5.0 - 0.5,  # peakiness
        ])
        blocks = [shape, dyn, mod, summary]
        return torch.cat([l2_normalize(b) for b in blocks]) / math.sqrt(len(blocks))


@register_arch("conv_audio")
class ConvAudioTower(nn.Module):
    """A small trainable CNN over log-mel, for checkpoints saved as safetensors."""

    def __init__(self, n_mels: int = N_MELS, channels: int = 64, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, channels, 5, padding=2), nn.GELU(),
            nn.Conv1d(channels, channels, 5, padding=2, stride=2), nn.GELU(),
            nn.Conv1d(channels, out_dim, 3, padding=1),
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:  # [B, n_mels, T] -> [B, out_dim]
        return self.net(logmel).mean(-1)


class AudioEncoder(nn.Module):
    """Waveforms (16 kHz mono float32) -> unit vectors in the shared D-dim space."""

    name = "audio"

    def __init__(self, dim: int = 384, checkpoint: Path | str | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.logmel = LogMel()
        if checkpoint:
            self.backbone, fmt = load_checkpoint(checkpoint, "audio")
            self.weights = WeightsInfo("audio", True, str(checkpoint), f"audio tower from {fmt} checkpoint")
            self.builtin = False
        else:
            self.backbone = SpectralStats()
            self.weights = WeightsInfo(
                "audio", False, "built-in",
                "deterministic spectral statistics (shape, dynamics, modulation), not a trained network",
            )
            self.builtin = True
        self._proj: torch.Tensor | None = None
        log.info("audio tower: %s", self.weights.description)

    def _project(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[-1] == self.dim:
            return l2_normalize(feats)
        if self._proj is None or self._proj.shape[0] != feats.shape[-1]:
            self._proj = fixed_projection(feats.shape[-1], self.dim, seed=1001)
        return l2_normalize(feats @ self._proj)

    @torch.inference_mode()
    def forward(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        mels = [self.logmel(w.float().flatten()) for w in waveforms]
        if self.builtin:
            feats = torch.stack([self.backbone(m) for m in mels])
        elif len({m.shape[1] for m in mels}) == 1:
            feats = self.backbone(torch.stack(mels)).float()
        else:
            # Clips of different lengths run one by one: padding would change a clip's
            # vector depending on what it was batched with.
            feats = torch.cat([self.backbone(m[None]).float() for m in mels])
        return self._project(feats)
