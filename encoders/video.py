"""Video tower: sampled RGB frames -> per-frame features -> temporal pooling -> shared space.

With a checkpoint (``AVREC_ENCODERS__VIDEO_CHECKPOINT``: TorchScript, our
safetensors architecture, or a Hugging Face CLIP vision directory) each frame
goes through the image network and the frame vectors are mean-pooled over time.

Without one, :class:`FrameStats` computes a documented, deterministic content
descriptor (no random weights):

* **colour**: a joint 4x4x4 RGB histogram (Hellinger-mapped, centred) plus the
  mean colour of a 4x4 grid of cells (the scene's colour layout);
* **layout**: a 6x6 "tiny image" of luminance, contrast-normalised;
* **texture**: a magnitude-weighted histogram of 8 gradient orientations and
  the gradient energy of a 4x4 grid (where the detail is);
* **motion**: mean absolute change between consecutive sampled frames, per 4x4
  cell and overall.

Frame features are pooled over time (mean), each block is centred and
L2-normalised, and a fixed orthonormal projection maps the result into the
shared space. A transcode keeps colours, layout and edges, so it lands close.
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


def _center_norm(x: torch.Tensor) -> torch.Tensor:
    return l2_normalize(x - x.mean(-1, keepdim=True))


class FrameStats(nn.Module):
    """The built-in, deterministic video descriptor (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([sobel, sobel.T])[:, None], persistent=False)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, 3, H, W] in [0, 1] (one clip) -> features [F]."""
        n = frames.shape[0]
        # Colour histogram over the whole clip: 4 levels per channel -> 64 joint bins.
        q = (frames.clamp(0, 1 - 1e-6) * 4).long()
        idx = (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten()
        hist = torch.bincount(idx, minlength=64).float()
        hist = (hist / hist.sum()).sqrt()  # Hellinger map: rare colours still count
        colour_grid = F.adaptive_avg_pool2d(frames, 4).mean(0).flatten()  # [3*16]
        y = (frames * self.luma).sum(1, keepdim=True)  # [N, 1, H, W]
        tiny = F.adaptive_avg_pool2d(y, 6).mean(0).flatten()
        tiny = (tiny - tiny.mean()) / (tiny.std(unbiased=False) + 0.02)
        g = F.conv2d(y, self.kernels, padding=1)  # [N, 2, H, W]
        mag = g.pow(2).sum(1).sqrt()
        ang = torch.atan2(g[:, 1], g[:, 0]) % math.pi  # orientation, sign-free
        bins = (ang / math.pi * 8).long().clamp(max=7).flatten()
        orient = torch.zeros(8).index_add_(0, bins, mag.flatten())
        orient = orient / orient.sum().clamp(min=1e-6)
        detail = F.adaptive_avg_pool2d(mag[:, None], 4).mean(0).flatten()
        if n > 1:
            diff = (y[1:] - y[:-1]).abs()
            motion_grid = F.adaptive_avg_pool2d(diff, 4).mean(0).flatten()
            motion_level = diff.mean().view(1)
        else:
            motion_grid, motion_level = torch.zeros(16), torch.zeros(1)
        motion = torch.cat([motion_grid, motion_level * 4.0])
        blocks = [
            _center_norm(hist),
            _center_norm(colour_grid),
            l2_normalize(tiny),
            _center_norm(orient),
            _center_norm(detail),
            # Motion is a level, not a shape: centre on a typical value so static and busy clips differ in sign.
            l2_normalize(motion - 0.05),
        ]
        return torch.cat(blocks) / math.sqrt(len(blocks))


@register_arch("conv_frames")
class ConvFrameTower(nn.Module):
    """A small trainable CNN over frames, for checkpoints saved as safetensors."""

    def __init__(self, channels: int = 32, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, out_dim, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, out_dim]
        return self.net(frames)


class VideoEncoder(nn.Module):
    """Clips of uint8 RGB frames [N, H, W, 3] -> unit vectors in the shared D-dim space."""

    name = "video"

    def __init__(self, dim: int = 384, checkpoint: Path | str | None = None) -> None:
        super().__init__()
        self.dim = dim
        if checkpoint:
            self.backbone, fmt = load_checkpoint(checkpoint, "video")
            self.weights = WeightsInfo("video", True, str(checkpoint), f"frame tower from {fmt} checkpoint")
            self.builtin = False
        else:
            self.backbone = FrameStats()
            self.weights = WeightsInfo(
                "video", False, "built-in",
                "deterministic colour, layout, texture and motion statistics, not a trained network",
            )
            self.builtin = True
        self._proj: torch.Tensor | None = None
        log.info("video tower: %s", self.weights.description)

    def _project(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[-1] == self.dim:
            return l2_normalize(feats)
        if self._proj is None or self._proj.shape[0] != feats.shape[-1]:
            self._proj = fixed_projection(feats.shape[-1], self.dim, seed=2002)
        return l2_normalize(feats @ self._proj)

    @torch.inference_mode()
    def forward(self, clips: list[torch.Tensor]) -> torch.Tensor:
        tensors = [c.permute(0, 3, 1, 2).float() / 255.0 for c in clips]  # [N, 3, H, W]
        if self.builtin:
            feats = torch.stack([self.backbone(t) for t in tensors])
        else:
            # Every frame of every clip in one batch through the image network, then mean over time.
            counts = [t.shape[0] for t in tensors]
            same_size = len({t.shape[-2:] for t in tensors}) == 1
            if same_size:
                per_frame = self.backbone(torch.cat(tensors)).float()
                feats = torch.stack([chunk.mean(0) for chunk in per_frame.split(counts)])
            else:
                feats = torch.stack([self.backbone(t).float().mean(0) for t in tensors])
        return self._project(feats)
