"""Loading tower checkpoints from configured paths.

Three formats are understood, chosen by what the path holds:

* ``*.pt`` / ``*.ts`` / ``*.torchscript``: a TorchScript module (``torch.jit.save``).
  The audio tower feeds it log-mel ``[B, n_mels, T]``; the video tower feeds it
  frames ``[B*N, 3, H, W]`` in [0, 1]. It must return ``[B, F]`` features.
* ``*.safetensors``: weights of one of our own architectures, with a JSON
  sidecar ``<name>.json`` = ``{"arch": "...", ...hyper-parameters}``.
* a directory with a Hugging Face ``config.json`` of a CLIP vision tower
  (``model_type`` ``clip_vision_model`` or ``clip``): loaded with
  ``transformers`` from local files only, never from a hub.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from encoders.exceptions import CheckpointError

log = logging.getLogger(__name__)

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".jit"}

# arch name -> constructor(**hparams); towers register their own architectures.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_arch(name: str):
    def deco(cls):
        ARCHITECTURES[name] = cls
        return cls

    return deco


def save_safetensors(module: nn.Module, path: Path, arch: str, **hparams) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar; the inverse of :func:`load_checkpoint`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"arch": arch, **hparams}, indent=2))
    return path


def load_checkpoint(path: Path | str, tower: str) -> tuple[nn.Module, str]:
    """Load a tower module from ``path``; returns ``(module in eval mode, format name)``.

    Raises :class:`CheckpointError` with the path and a fix for anything unusable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"{tower} checkpoint {path} does not exist. Fix AVREC_ENCODERS__{tower.upper()}_CHECKPOINT "
            "or unset it to use the built-in content-feature extractor."
        )
    try:
        if path.is_dir():
            return _load_hf_dir(path, tower), "huggingface"
        if path.suffix in TORCHSCRIPT_SUFFIXES:
            module = torch.jit.load(str(path), map_location="cpu")
            return module.eval(), "torchscript"
        if path.suffix == ".safetensors":
            return _load_safetensors(path, tower), "safetensors"
    except CheckpointError:
        raise
    except Exception as exc:  # torch / safetensors raise many types for a bad file
        raise CheckpointError(f"{tower} checkpoint {path} could not be loaded: {exc}") from exc
    raise CheckpointError(
        f"{tower} checkpoint {path}: unknown format {path.suffix!r}; use TorchScript "
        f"({', '.join(sorted(TORCHSCRIPT_SUFFIXES))}), .safetensors with a .json sidecar, or a Hugging Face directory."
    )


def _load_safetensors(path: Path, tower: str) -> nn.Module:
    from safetensors.torch import load_file

    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise CheckpointError(
            f"{tower} checkpoint {path} has no sidecar {sidecar.name} naming its architecture "
            f"(one of: {', '.join(sorted(ARCHITECTURES))})."
        )
    meta = json.loads(sidecar.read_text())
    arch = meta.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{tower} checkpoint {path}: unknown arch {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}."
        )
    module = ARCHITECTURES[arch](**meta)
    missing, unexpected = module.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{tower} checkpoint {path} does not fit arch {arch!r}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return module.eval()


class HFClipVision(nn.Module):
    """A Hugging Face CLIP vision tower: frames [B, 3, H, W] in [0, 1] -> image embeddings."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], size: int) -> None:
        super().__init__()
        self.model = model
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(frames, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        return out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output


def _load_hf_dir(path: Path, tower: str) -> nn.Module:
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{tower} checkpoint dir {path} has no config.json (Hugging Face format expected).")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if tower != "video" or model_type not in {"clip_vision_model", "clip"}:
        raise CheckpointError(
            f"{tower} checkpoint {path}: Hugging Face model_type {model_type!r} is not supported for the "
            f"{tower} tower. Supported: CLIP vision (video tower). Export other models to TorchScript."
        )
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True).eval()
    pre = path / "preprocessor_config.json"
    meta = json.loads(pre.read_text()) if pre.exists() else {}
    mean = meta.get("image_mean", [0.48145466, 0.4578275, 0.40821073])
    std = meta.get("image_std", [0.26862954, 0.26130258, 0.27577711])
    size = int(model.config.image_size)
    log.info("video tower: Hugging Face CLIP vision from %s (image size %d)", path, size)
    return HFClipVision(model, mean, std, size).eval()
