"""Decode the real MicroLens sample clips (HEVC video + AAC 44.1 kHz, 8-29 s).

The clips are read in place from ``../shared/data``; only transcodes made for
the comparison are written, into pytest's tmp dir.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.media import MediaResolver, decode_audio, decode_video_frames, load_item_media, probe
from tests.mediagen import transcode

pytestmark = pytest.mark.shared_data

log = logging.getLogger(__name__)

CLIPS = ["1002", "10034", "10040"]


def _resolver(shared_data: Path) -> MediaResolver:
    return MediaResolver(roots=[shared_data], hosts=[], max_bytes=50 * 1024 * 1024, timeout_s=10)


def _uri(shared_data: Path, clip: str) -> str:
    return f"file://{shared_data}/microlens-sample/{clip}.mp4"


@pytest.fixture(scope="module")
def decoded() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Each clip's (waveform, frames, seconds) once per module: HEVC decoding is the slow part."""
    return {}


def _decode(shared_data: Path, clip: str, cache: dict) -> tuple[np.ndarray, np.ndarray, float]:
    if clip not in cache:
        uri = _uri(shared_data, clip)
        started = time.perf_counter()
        wave, frames = load_item_media(_resolver(shared_data), uri, uri, sample_rate=16000,
                                       max_audio_s=30.0, num_frames=8, frame_size=112)
        cache[clip] = (wave, frames, time.perf_counter() - started)
    return cache[clip]


@pytest.mark.parametrize("clip", CLIPS)
def test_microlens_clip_decodes(shared_data, clip, decoded, record_property):
    resolver = _resolver(shared_data)
    uri = _uri(shared_data, clip)
    info = probe(resolver.fetch(uri), uri=uri)
    assert info["video_codec"] == "hevc" and info["audio_codec"] == "aac"
    assert 5.0 <= info["duration_s"] <= 30.0

    wave, frames, elapsed = _decode(shared_data, clip, decoded)
    record_property("decode_s", round(elapsed, 3))
    log.info("%s decoded (audio + 8 frames) in %.2fs", clip, elapsed)

    assert wave is not None and wave.dtype == np.float32 and wave.ndim == 1
    expected = min(info["duration_s"], 30.0) * 16000
    assert abs(len(wave) - expected) < 0.02 * expected
    assert np.abs(wave).max() <= 1.0
    assert np.sqrt(np.mean(wave**2)) > 1e-3  # not silent

    assert frames is not None and frames.shape == (8, 112, 112, 3) and frames.dtype == np.uint8
    assert frames.std() > 10
    # Uniform sampling over a real clip: not all the same picture.
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 2


@pytest.mark.parametrize("clip", CLIPS)
def test_microlens_transcode_decodes_to_similar_frames(shared_data, clip, decoded, tmp_path):
    source = shared_data / "microlens-sample" / f"{clip}.mp4"
    small = transcode(source, tmp_path / f"{clip}-small.mp4", width=384)
    assert small.stat().st_size < source.stat().st_size
    assert probe(small)["video_codec"] in ("h264", "mpeg4")

    original_wave, original, _ = _decode(shared_data, clip, decoded)
    recoded = decode_video_frames(small, num_frames=8, size=112)
    assert recoded.shape == original.shape
    same = np.abs(original.astype(np.int16) - recoded).mean(axis=(1, 2, 3))
    assert same.max() < 12, same  # same moments, only scaling and coding loss
    # ...and clearly closer than other moments of the same clip would be.
    shifted = np.abs(original.astype(np.int16) - np.roll(recoded, 4, axis=0)).mean(axis=(1, 2, 3))
    assert same.mean() < 0.5 * shifted.mean(), (same, shifted)

    wave = decode_audio(small, sample_rate=16000)
    assert abs(len(wave) - len(original_wave)) < 0.02 * len(original_wave)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(np.sqrt(np.mean(original_wave**2)), rel=0.2)
