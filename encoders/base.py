"""The small interface every tower shares, and the record of which weights it runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class WeightsInfo:
    """What a tower is running: never call a tower pretrained when it is not."""

    tower: str
    pretrained: bool
    source: str  # a checkpoint path, or "built-in" for the deterministic extractors
    description: str

    def as_dict(self) -> dict:
        return asdict(self)


def l2_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def fixed_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A seeded random orthonormal projection [in_dim, out_dim] (Johnson-Lindenstrauss).

    Used to map the hand-crafted content features into the shared space without
    training: it preserves angles between feature vectors, so "close in features"
    stays "close in the shared space". Deterministic across runs and machines.
    """
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(max(in_dim, out_dim), min(in_dim, out_dim), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(m)  # orthonormal columns
    q = q if in_dim >= out_dim else q.T
    return q[:in_dim, :out_dim].to(torch.float32).contiguous()
