"""Multimodal fusion: per-modality projections, then attention over the modalities present.

Each modality vector (text, audio, video; all D-dim, unit-norm) goes through its
own projection into the shared space. A small attention head scores each
projected vector; a mask removes missing modalities before the softmax, so an
item with text only still gets a vector (its text vector), and a video without
a title is carried by its audio and frames.

Without a fusion checkpoint the projections are the identity and the attention
scores are zero, i.e. the fused vector is the normalised *mean* of the present
modalities: documented and deterministic, not random. A checkpoint
(``AVREC_ENCODERS__FUSION_CHECKPOINT``, safetensors of this module's state dict
with a ``{"arch": "fusion", "dim": D}`` sidecar) replaces both with learned ones.

The per-modality vectors are returned too: the recommender explains with them
("sounds like", "looks like", "about the same topic as").
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from encoders.base import WeightsInfo, l2_normalize
from encoders.checkpoints import load_checkpoint, register_arch

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "video")


@register_arch("fusion")
class AttentionFusion(nn.Module):
    def __init__(self, dim: int = 384, hidden: int = 64, modalities: int = len(MODALITIES)) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(modalities))
        self.score_in = nn.Linear(dim, hidden)
        self.score_out = nn.Linear(hidden, 1, bias=False)
        self.prior = nn.Parameter(torch.zeros(modalities))
        self.reset_to_mean()

    def reset_to_mean(self) -> None:
        """The untrained default: identity projections and equal attention (a plain mean)."""
        with torch.no_grad():
            for p in self.proj:
                p.weight.copy_(torch.eye(self.dim))
                p.bias.zero_()
            self.score_out.weight.zero_()
            self.prior.zero_()
            # score_in is irrelevant while score_out is zero; a fixed init keeps it deterministic.
            g = torch.Generator().manual_seed(3003)
            self.score_in.weight.copy_(torch.randn(self.score_in.weight.shape, generator=g) * 0.02)
            self.score_in.bias.zero_()

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """vectors [B, M, D], mask [B, M] (1 = present) -> fused [B, D], projected [B, M, D], weights [B, M]."""
        projected = torch.stack([l2_normalize(p(vectors[:, i])) for i, p in enumerate(self.proj)], dim=1)
        scores = self.score_out(torch.tanh(self.score_in(projected))).squeeze(-1) + self.prior
        present = mask > 0.5
        scores = scores.masked_fill(~present, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # rows with no modality at all
        fused = l2_normalize((weights.unsqueeze(-1) * projected).sum(1))
        projected = projected * present.unsqueeze(-1)
        return fused, projected, weights


class Fusion(nn.Module):
    """Loads :class:`AttentionFusion` from a checkpoint, or builds the documented mean default."""

    def __init__(self, dim: int = 384, checkpoint: Path | str | None = None) -> None:
        super().__init__()
        if checkpoint:
            module, fmt = load_checkpoint(checkpoint, "fusion")
            if getattr(module, "dim", dim) != dim:
                from encoders.exceptions import CheckpointError

                raise CheckpointError(f"fusion checkpoint {checkpoint} is {module.dim}-d, settings say {dim}")
            self.module = module
            self.weights = WeightsInfo("fusion", True, str(checkpoint), f"learned attention fusion ({fmt})")
        else:
            self.module = AttentionFusion(dim)
            self.weights = WeightsInfo(
                "fusion", False, "built-in", "identity projections, equal attention over present modalities"
            )
        self.dim = dim
        self.module.eval()

    @torch.inference_mode()
    def forward(self, vectors: torch.Tensor, mask: torch.Tensor):
        return self.module(vectors.float(), mask.float())
