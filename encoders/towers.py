"""Thin factories: build each tower from settings, on the device Triton gave the instance."""

from __future__ import annotations

import torch

from encoders.base import WeightsInfo
from streams.settings import EncoderSettings


def build_text(settings: EncoderSettings, device: str = "cpu"):
    from encoders.text import TextEncoder

    return TextEncoder().to(device)


def build_audio(settings: EncoderSettings, device: str = "cpu"):
    from encoders.audio import AudioEncoder

    return AudioEncoder(settings.dim, settings.audio_checkpoint).to(device)


def build_video(settings: EncoderSettings, device: str = "cpu"):
    from encoders.video import VideoEncoder

    return VideoEncoder(settings.dim, settings.video_checkpoint).to(device)


def build_fusion(settings: EncoderSettings, device: str = "cpu"):
    from encoders.fusion import Fusion

    return Fusion(settings.dim, settings.fusion_checkpoint).to(device)


BUILDERS = {"text": build_text, "audio": build_audio, "video": build_video, "fusion": build_fusion}


def weights_report(settings: EncoderSettings) -> list[WeightsInfo]:
    """Which weights each tower runs with these settings (loads them, so a bad path fails here)."""
    torch.set_grad_enabled(False)
    return [BUILDERS[name](settings).weights for name in BUILDERS]
