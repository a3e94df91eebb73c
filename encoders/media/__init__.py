"""Media ingestion: resolve a URI under the policy, then decode it with PyAV.

Typical use::

    resolver = MediaResolver.from_settings(settings.encoders)
    waveform, frames = load_item_media(resolver, audio_uri, video_uri)

Every failure is a :class:`encoders.exceptions.MediaError` subclass carrying the
URI and the reason.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from encoders.exceptions import (
    MediaDecodeError,
    MediaError,
    MediaFetchError,
    MediaPolicyError,
    MediaTooLarge,
)
from encoders.media.decode import ALLOWED_FORMATS, Source, decode_audio, decode_video_frames, probe
from encoders.media.resolver import MediaResolver, MediaSource

__all__ = [
    "ALLOWED_FORMATS",
    "MediaDecodeError",
    "MediaError",
    "MediaFetchError",
    "MediaPolicyError",
    "MediaResolver",
    "MediaSource",
    "MediaTooLarge",
    "Source",
    "decode_audio",
    "decode_video_frames",
    "load_item_media",
    "probe",
]

log = logging.getLogger(__name__)


def load_item_media(
    resolver: MediaResolver,
    audio_uri: str | None,
    video_uri: str | None,
    *,
    sample_rate: int = 16_000,
    max_audio_s: float = 30.0,
    num_frames: int = 8,
    frame_size: int = 112,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fetch and decode an item's media: ``(waveform or None, frames or None)``.

    A ``None`` (or empty) URI gives ``None`` for that modality. The audio track
    of the video is deliberately *not* used when ``audio_uri`` is absent: which
    audio describes an item is the producer's decision, and silently borrowing
    it would make embeddings depend on which fields happened to be filled in.
    Errors propagate as :class:`MediaError` subclasses.
    """
    waveform = None
    frames = None
    if audio_uri:
        started = time.perf_counter()
        source = resolver.fetch(audio_uri)
        waveform = decode_audio(source, uri=audio_uri, sample_rate=sample_rate, max_seconds=max_audio_s)
        log.debug("audio %s: %d samples in %.3fs", audio_uri, len(waveform), time.perf_counter() - started)
    if video_uri:
        started = time.perf_counter()
        source = resolver.fetch(video_uri)
        frames = decode_video_frames(source, uri=video_uri, num_frames=num_frames, size=frame_size)
        log.debug("video %s: %d frames in %.3fs", video_uri, len(frames), time.perf_counter() - started)
    return waveform, frames
