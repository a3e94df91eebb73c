"""Decode media into the arrays the towers take, with PyAV (FFmpeg).

* :func:`decode_audio` -> float32 mono waveform in [-1, 1] at a fixed rate.
* :func:`decode_video_frames` -> uint8 ``[num_frames, size, size, 3]`` RGB,
  sampled uniformly over the clip, center-cropped to a square.
* :func:`probe` -> duration, streams and codecs, without decoding.

Every FFmpeg failure (corrupt, truncated, unsupported codec, not media at all)
becomes :class:`MediaDecodeError` carrying the URI and FFmpeg's reason; no raw
``av`` exception leaves this module.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import av
import numpy as np

from encoders.exceptions import MediaDecodeError
from encoders.media.resolver import MediaSource

log = logging.getLogger(__name__)

# What the decoders accept: a fetched MediaSource, a local path, or the bytes.
Source = Union[MediaSource, Path, str, bytes, bytearray, memoryview]

# Demuxers we open. Playlist- and URL-driven demuxers (hls, dash, concat, sdp,
# image2 patterns, tee) are left out: they open further files or sockets named
# inside the media, which would bypass the resolver's policy.
ALLOWED_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,asf,ogg,"
    "wav,w64,aiff,caf,mp3,aac,flac,m4v,h264,hevc"
)
# Only plain reads: no network protocol may be reached from inside a file.
_OPEN_OPTIONS = {"format_whitelist": ALLOWED_FORMATS, "protocol_whitelist": "file"}
# FFmpeg's errors all derive from av.FFmpegError; OSError/EOFError cover a
# file that vanishes or a Python file object that fails mid-read.
_AV_ERRORS = (av.FFmpegError, OSError, EOFError, UnicodeDecodeError)
# A decode that covers less than this share of the declared duration is a
# truncated file, not a short clip (FFmpeg stops quietly at a cut mdat).
_MIN_COVERAGE = 0.5
# Below this declared duration the coverage check is skipped: a few frames'
# rounding would dominate.
_COVERAGE_MIN_S = 1.0
# Non-reference frames are skipped while the next target is further away than
# this (seconds, and frames beyond the decoder's thread count).
_SKIP_MARGIN_S = 0.25
_SKIP_MARGIN_FRAMES = 4


# -- opening -----------------------------------------------------------------


def _uri_of(source: Source, uri: str | None) -> str:
    """The URI to name in errors: the caller's, the source's, or a placeholder."""
    if uri:
        return uri
    if isinstance(source, MediaSource):
        return source.uri
    if isinstance(source, (str, Path)):
        return str(source)
    return "<bytes>"


def _input_of(source: Source) -> str | io.BytesIO:
    """What ``av.open`` takes: a filesystem path, or the bytes as a seekable file."""
    if isinstance(source, MediaSource):
        return str(source.path) if source.path is not None else io.BytesIO(source.data or b"")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    return str(source)


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the Python errno noise, for MediaDecodeError."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


@contextmanager
def _opened(source: Source, uri: str) -> Iterator[Any]:
    """Open ``source`` for reading; every av error inside the block becomes MediaDecodeError."""
    try:
        container = av.open(_input_of(source), mode="r", options=dict(_OPEN_OPTIONS))
    except _AV_ERRORS as exc:
        raise MediaDecodeError(uri, f"cannot open: {_reason(exc)}") from exc
    try:
        yield container
    except _AV_ERRORS as exc:
        raise MediaDecodeError(uri, f"decode failed: {_reason(exc)}") from exc
    finally:
        try:
            container.close()
        except _AV_ERRORS:  # closing a broken container must not mask the real error
            log.debug("error closing container for %s", uri, exc_info=True)


def _first_stream(container: Any, kind: str, uri: str) -> Any:
    streams = getattr(container.streams, kind)
    if not streams:
        raise MediaDecodeError(uri, f"no {kind} stream")
    stream = streams[0]
    # PyAV leaves codec_context None when FFmpeg has no decoder for the
    # stream (unknown codec id, or a header too damaged to name one).
    if stream.codec_context is None:
        raise MediaDecodeError(uri, f"unsupported or unknown {kind} codec")
    return stream


def _stream_duration_s(container: Any, stream: Any) -> float | None:
    """The stream's duration in seconds, else the container's, else None."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _stream_start_s(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _check_coverage(uri: str, kind: str, covered_s: float, expected_s: float | None) -> None:
    """Raise if a decode that ran to EOF covers too little of the declared duration."""
    if expected_s is None or expected_s < _COVERAGE_MIN_S:
        return
    if covered_s < _MIN_COVERAGE * expected_s:
        raise MediaDecodeError(
            uri,
            f"truncated or corrupt: {kind} decodes to {covered_s:.2f}s of the declared {expected_s:.2f}s",
        )


# -- probe -------------------------------------------------------------------


def probe(source: Source, *, uri: str | None = None) -> dict[str, Any]:
    """Duration and stream facts from the container header, without decoding.

    Keys: ``duration_s`` (float or None), ``has_audio``, ``has_video``,
    ``video_codec``, ``audio_codec`` (FFmpeg codec names or None), plus
    ``format``, ``width``, ``height``, ``fps``, ``sample_rate``, ``channels``.
    Raises :class:`MediaDecodeError` for anything FFmpeg cannot open or that
    has neither audio nor video.
    """
    uri = _uri_of(source, uri)
    with _opened(source, uri) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaDecodeError(uri, "no audio or video stream")
        main = video if video is not None else audio
        vctx = video.codec_context if video is not None else None
        actx = audio.codec_context if audio is not None else None  # None: no decoder
        return {
            "duration_s": _stream_duration_s(container, main),
            "has_audio": audio is not None,
            "has_video": video is not None,
            "video_codec": _codec_name(video),
            "audio_codec": _codec_name(audio),
            "format": container.format.name,
            "width": vctx.width if vctx is not None else None,
            "height": vctx.height if vctx is not None else None,
            "fps": float(video.average_rate) if video is not None and video.average_rate else None,
            "sample_rate": actx.sample_rate if actx is not None else None,
            "channels": actx.channels if actx is not None else None,
        }


def _codec_name(stream: Any) -> str | None:
    """FFmpeg's codec name; "unknown" for a stream FFmpeg has no decoder for."""
    if stream is None:
        return None
    ctx = stream.codec_context
    return ctx.name if ctx is not None else "unknown"


# -- audio -------------------------------------------------------------------


def decode_audio(
    source: Source,
    *,
    uri: str | None = None,
    sample_rate: int = 16_000,
    max_seconds: float = 30.0,
) -> np.ndarray:
    """The first audio stream as float32 mono in [-1, 1] at ``sample_rate``.

    At most ``max_seconds`` are returned; decoding stops as soon as that much is
    in hand. A file without an audio stream raises :class:`MediaDecodeError`
    ("no audio stream") rather than returning silence: whether a silent item is
    acceptable is the caller's decision. Silent audio *is* returned as zeros.
    """
    if sample_rate <= 0 or max_seconds <= 0:
        raise ValueError("sample_rate and max_seconds must be positive")
    uri = _uri_of(source, uri)
    max_samples = int(round(max_seconds * sample_rate))
    with _opened(source, uri) as container:
        stream = _first_stream(container, "audio", uri)
        chunks, hit_limit = _resample_mono(container, stream, uri, sample_rate, max_samples)
        total = sum(len(c) for c in chunks)
        if total == 0:
            raise MediaDecodeError(uri, "audio stream decoded to no samples")
        if not hit_limit:
            expected = _stream_duration_s(container, stream)
            expected = min(expected, max_seconds) if expected is not None else None
            _check_coverage(uri, "audio", total / sample_rate, expected)
    wave = np.concatenate(chunks)[:max_samples]
    # AAC and resampling overshoot full scale slightly; the towers expect [-1, 1].
    np.clip(wave, -1.0, 1.0, out=wave)
    return wave


def _resample_mono(
    container: Any, stream: Any, uri: str, sample_rate: int, max_samples: int
) -> tuple[list[np.ndarray], bool]:
    """Decode and resample until ``max_samples``; returns the chunks and whether the limit was hit."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            total += _take(chunks, resampler.resample(frame))
            if total >= max_samples:
                return chunks, True
        total += _take(chunks, resampler.resample(None))  # flush the resampler's delay
    except ValueError as exc:
        # PyAV's resampler raises ValueError when the input layout/rate changes
        # mid-stream; for us that is undecodable audio.
        if isinstance(exc, av.FFmpegError):
            raise
        raise MediaDecodeError(uri, f"audio format changes mid-stream: {exc}") from exc
    return chunks, total >= max_samples


def _take(chunks: list[np.ndarray], frames: list[Any]) -> int:
    """Append resampled frames' samples (packed mono float) to ``chunks``."""
    n = 0
    for out in frames:
        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        chunks.append(samples)
        n += len(samples)
    return n


# -- video -------------------------------------------------------------------


def decode_video_frames(
    source: Source,
    *,
    uri: str | None = None,
    num_frames: int = 8,
    size: int = 112,
    max_decode_frames: int = 3000,
    seek_threshold_s: float = 60.0,
) -> np.ndarray:
    """``num_frames`` RGB frames, uint8 ``[num_frames, size, size, 3]``, uniform over the clip.

    Target times are the centres of ``num_frames`` equal slices of the video
    stream's duration; each gets the decoded frame nearest to it. Clips up to
    ``seek_threshold_s`` are decoded in one pass that stops after the last
    target (robust for HEVC, whose GOPs are often long, and with at most
    ``max_decode_frames`` decoded). Longer clips seek to each target instead.
    A clip with fewer frames than ``num_frames`` repeats frames to fill.
    Frames are center-cropped to a square, resized, and rotated per the
    display matrix.
    """
    if num_frames < 1 or size < 1 or max_decode_frames < 1:
        raise ValueError("num_frames, size and max_decode_frames must be >= 1")
    uri = _uri_of(source, uri)
    with _opened(source, uri) as container:
        stream = _first_stream(container, "video", uri)
        # Frame + slice threading: HEVC at 720p decodes noticeably faster.
        stream.thread_type = "AUTO"
        duration = _stream_duration_s(container, stream)
        if duration is None:
            frames = _sample_by_decimation(container, stream, uri, num_frames, size, max_decode_frames)
        else:
            start = _stream_start_s(stream)
            targets = [start + (i + 0.5) * duration / num_frames for i in range(num_frames)]
            picker = _NearestPicker(targets, size)
            if duration > seek_threshold_s:
                _pick_by_seeking(container, stream, picker, max_decode_frames)
            else:
                _pick_single_pass(container, stream, picker, uri, duration, max_decode_frames)
            frames = picker.finish(uri)
    return np.stack(frames)


class _NearestPicker:
    """For each target time, keeps the decoded frame nearest to it.

    Frames are fed in presentation order; a target is settled once a frame at
    or after it arrives, choosing between that frame and the one before.
    Conversion to RGB happens only for chosen frames.
    """

    def __init__(self, targets: list[float], size: int) -> None:
        self.targets = targets
        self.size = size
        self.chosen: list[np.ndarray] = []
        self._prev: tuple[float, Any] | None = None
        self._last: tuple[Any, np.ndarray] | None = None  # (frame, its RGB), reused for repeats
        self.last_time: float | None = None

    @property
    def done(self) -> bool:
        return len(self.chosen) >= len(self.targets)

    @property
    def next_target(self) -> float:
        return self.targets[len(self.chosen)]

    def forget_previous(self) -> None:
        """After a seek the previous frame is no longer adjacent to the next one."""
        self._prev = None

    def feed(self, t: float, frame: Any) -> None:
        while not self.done and t >= self.next_target:
            target = self.next_target
            if self._prev is not None and target - self._prev[0] <= t - target:
                self.chosen.append(self._convert(self._prev[1]))
            else:
                self.chosen.append(self._convert(frame))
        self._prev = (t, frame)
        self.last_time = t

    def settle_with_previous(self) -> bool:
        """Settle the next target with the last frame fed; False if there is none."""
        if self._prev is None or self.done:
            return False
        self.chosen.append(self._convert(self._prev[1]))
        return True

    def finish(self, uri: str) -> list[np.ndarray]:
        """Fill targets past the last decoded frame with it; raise if nothing decoded."""
        if not self.done:
            if self._prev is None and not self.chosen:
                raise MediaDecodeError(uri, "video stream decoded to no frames")
            fill = self._convert(self._prev[1]) if self._prev is not None else self.chosen[-1]
            while not self.done:
                self.chosen.append(fill)
        return self.chosen

    def _convert(self, frame: Any) -> np.ndarray:
        if self._last is None or self._last[0] is not frame:
            self._last = (frame, _to_square_rgb(frame, self.size))
        return self._last[1]


def _frame_times(frames: Iterator[Any], stream: Any) -> Iterator[tuple[float, Any]]:
    """Pair each frame with its time in seconds, extrapolating when pts is missing."""
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    t = None
    for frame in frames:
        if frame.time is not None:
            t = float(frame.time)
        else:
            t = 0.0 if t is None else t + 1.0 / rate
        yield t, frame


def _pick_single_pass(
    container: Any, stream: Any, picker: _NearestPicker, uri: str, duration: float, max_frames: int
) -> None:
    decoded = 0
    ctx = stream.codec_context
    fps = float(stream.average_rate) if stream.average_rate else 30.0
    # Frames far from every target are never looked at, and frames no other
    # frame references can be skipped without harming later ones. The margin
    # covers frame-threading lag (the setting reaches the decoder threads a
    # few frames late) so every frame around a target is decoded.
    # thread_count 0 means FFmpeg chose, about one thread per core.
    threads = ctx.thread_count or os.cpu_count() or 8
    margin_s = max(_SKIP_MARGIN_S, (_SKIP_MARGIN_FRAMES + threads) / fps)
    skipping = False
    for t, frame in _frame_times(container.decode(stream), stream):
        picker.feed(t, frame)
        decoded += 1
        if picker.done:
            return
        far = picker.next_target - t > margin_s
        if far != skipping:
            ctx.skip_frame = "NONREF" if far else "DEFAULT"
            skipping = far
        if decoded >= max_frames:
            log.warning("%s: stopped after %d decoded frames; last targets reuse frame at %.2fs",
                        uri, decoded, t)
            return
    # Reached EOF before the last target: a short clip, or a cut file.
    if picker.last_time is not None:
        frame_s = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        covered = picker.last_time + frame_s - _stream_start_s(stream)
        _check_coverage(uri, "video", covered, duration)


def _pick_by_seeking(container: Any, stream: Any, picker: _NearestPicker, max_frames: int) -> None:
    """Seek to the keyframe before each target and decode forward to it.

    Work per target is bounded; with very long GOPs (one keyframe for the whole
    clip is common in phone uploads) a target may get the last frame reached.
    """
    budget = max(1, max_frames // len(picker.targets))
    while not picker.done:
        target = picker.next_target
        # Offsets are in the stream's time base when a stream is given.
        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        picker.forget_previous()
        settled = len(picker.chosen)
        decoded = 0
        for t, frame in _frame_times(container.decode(stream), stream):
            picker.feed(t, frame)
            decoded += 1
            if len(picker.chosen) > settled or decoded >= budget:
                break
        # EOF or budget spent before the target: settle it with the last frame reached.
        if len(picker.chosen) == settled and not picker.settle_with_previous():
            return  # nothing decodes after this seek; finish() fills the rest


def _sample_by_decimation(
    container: Any, stream: Any, uri: str, num_frames: int, size: int, max_frames: int
) -> list[np.ndarray]:
    """Uniform sampling when the duration is unknown: keep every k-th frame, doubling k.

    The buffer stays under ``4 * num_frames`` frames whatever the length, and the
    kept frames stay evenly spaced, so picking evenly from it at EOF is uniform.
    """
    capacity = 4 * num_frames
    kept: list[np.ndarray] = []
    stride = 1
    decoded = 0
    for index, frame in enumerate(container.decode(stream)):
        if index % stride == 0:
            kept.append(_to_square_rgb(frame, size))
            if len(kept) > capacity:
                kept = kept[::2]
                stride *= 2
        decoded += 1
        if decoded >= max_frames:
            log.warning("%s: duration unknown; sampled the first %d frames only", uri, decoded)
            break
    if not kept:
        raise MediaDecodeError(uri, "video stream decoded to no frames")
    picks = np.linspace(0, len(kept) - 1, num_frames).round().astype(int)
    return [kept[i] for i in picks]


def _to_square_rgb(frame: Any, size: int) -> np.ndarray:
    """Resize so the short side is ``size`` (area filter), center-crop, apply rotation."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    new_w = max(size, int(round(w * scale)))
    new_h = max(size, int(round(h * scale)))
    rgb = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    square = rgb[top : top + size, left : left + size]
    return np.ascontiguousarray(_apply_rotation(square, _rotation_of(frame)))


def _rotation_of(frame: Any) -> int:
    """The display-matrix rotation (degrees counter-clockwise), 0 when absent."""
    try:
        return int(frame.rotation or 0)
    except (AttributeError, *_AV_ERRORS):
        return 0


def _apply_rotation(square: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate a square image the way a player would (phone uploads store portrait as rotated)."""
    quarter_turns = int(math.floor(degrees / 90.0 + 0.5)) % 4
    return np.rot90(square, k=quarter_turns) if quarter_turns else square
