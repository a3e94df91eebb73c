"""Small, real media files synthesised with PyAV for the media tests.

Everything is deterministic (fixed seeds, no wall clock), so a failing test
reproduces exactly. Patterns:

* ``bars``: vertical colour bars that scroll one bar per second;
* ``noise``: seeded uniform noise, a fresh image per frame;
* ``gradient``: a horizontal gradient whose phase moves with time;
* ``ramp``: a flat grey level rising from 16 to 235 over the clip, so a
  frame's brightness tells which moment of the clip it came from;
* ``center``: green in the centre square of the frame, red in the side
  margins, to check center-cropping of non-square video.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_BAR_COLOURS = np.array(
    [[235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16],
     [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16]],
    dtype=np.uint8,
)  # fmt: skip
_AUDIO_FRAME = 1024  # AAC's frame size


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001  (PyAV raises different errors per version)
        return False
    return True


def _image(pattern: str, index: int, n_frames: int, fps: float, size: tuple[int, int],
           rng: np.random.Generator) -> np.ndarray:
    width, height = size
    t = index / fps
    if pattern == "bars":
        bar = (np.arange(width) * len(_BAR_COLOURS) // width + int(t)) % len(_BAR_COLOURS)
        return np.broadcast_to(_BAR_COLOURS[bar][None, :, :], (height, width, 3)).copy()
    if pattern == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if pattern == "gradient":
        x = (np.arange(width) / width + t / 2.0) % 1.0
        row = (16 + 219 * x).astype(np.uint8)
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = row[None, :]
        img[..., 1] = row[None, ::-1]
        img[..., 2] = (16 + 219 * np.arange(height) / height).astype(np.uint8)[:, None]
        return img
    if pattern == "ramp":
        return np.full((height, width, 3), ramp_level(index, n_frames), np.uint8)
    if pattern == "center":
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = 220
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        img[top : top + side, left : left + side] = (16, 220, 16)
        return img
    raise ValueError(f"unknown pattern {pattern!r}")


def ramp_level(index: int, n_frames: int) -> int:
    """The grey level of frame ``index`` in a ``ramp`` clip of ``n_frames``."""
    return int(round(16 + 219 * index / max(1, n_frames - 1)))


def _tone(start: int, count: int, rate: int, tone_hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(start, start + count) / rate
    return (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)


def _write_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                 seconds: float, tone_hz: float, rate: int, channels: int, planar: bool,
                 amplitude: float = 0.5) -> None:
    layout = "mono" if channels == 1 else "stereo"
    total = int(round(seconds * rate))
    done = 0
    while done < total:
        count = min(_AUDIO_FRAME, total - done)
        mono = _tone(done, count, rate, tone_hz, amplitude)
        if planar:
            data, fmt = np.tile(mono, (channels, 1)), "fltp"
        else:  # packed s16 for PCM/WAV
            s16 = (mono * 32767).astype(np.int16)
            data, fmt = np.repeat(s16, channels)[None, :], "s16"
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = done
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        done += count
    for packet in stream.encode(None):
        container.mux(packet)


def make_video(
    path: Path | str,
    seconds: float = 2.0,
    fps: int = 12,
    size: tuple[int, int] = (96, 64),
    pattern: str = "bars",
    with_audio: bool = True,
    tone_hz: float = 440.0,
    codec: str = "mpeg4",
    audio_codec: str = "aac",
    audio_rate: int = 44_100,
    channels: int = 2,
    gop: int = 12,
    faststart: bool = False,
    container_format: str | None = None,
    seed: int = 0,
) -> Path:
    """Write an MP4 (or whatever ``path``'s suffix names) and return its path.

    ``size`` is (width, height) and must be even for yuv420p. ``faststart``
    puts the index (moov) before the data, as web-served MP4s have it.
    ``container_format`` forces a muxer, e.g. ``"m4v"`` for a raw MPEG-4
    elementary stream, which has no duration and no audio.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_frames = max(1, int(round(seconds * fps)))
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = gop
        video.codec_context.bit_rate = 400_000
        if codec in ("libx264", "h264"):
            # No B-frames keeps the output order trivial and the files tiny.
            video.codec_context.options = {"preset": "ultrafast", "bf": "0"}
        audio = None
        if with_audio:
            audio = container.add_stream(audio_codec, rate=audio_rate,
                                         layout="mono" if channels == 1 else "stereo")
        for index in range(n_frames):
            img = _image(pattern, index, n_frames, fps, size, rng)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _write_audio(container, audio, n_frames / fps, tone_hz, audio_rate, channels, planar=True)
    return path


def make_wav(path: Path | str, seconds: float = 1.0, tone_hz: float = 1000.0,
             sample_rate: int = 16_000, channels: int = 1, amplitude: float = 0.5) -> Path:
    """Write a 16-bit PCM WAV holding a sine tone and return its path."""
    path = Path(path)
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate,
                                      layout="mono" if channels == 1 else "stereo")
        _write_audio(container, stream, seconds, tone_hz, sample_rate, channels, planar=False,
                     amplitude=amplitude)
    return path


def transcode(src: Path | str, dst: Path | str, *, codec: str | None = None, width: int = 384,
              crf: int = 28, bit_rate: int = 500_000, audio_bit_rate: int = 64_000) -> Path:
    """Re-encode ``src`` smaller (``width`` wide, lower bitrate), keeping every frame's timestamp.

    ``codec`` defaults to libx264 (constant quality ``crf``) where the wheel has
    it, else mpeg4 at ``bit_rate``. Frames keep their pts and the stream its
    time base, so uniform sampling picks the same moments in both files.
    """
    codec = codec or ("libx264" if has_encoder("libx264") else "mpeg4")
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), mode="w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        height = int(round(vin.codec_context.height * width / vin.codec_context.width / 2)) * 2
        if codec in ("libx264", "h264"):
            options = {"crf": str(crf), "preset": "ultrafast"}
        else:
            # mpeg4's rate control misjudges fine time bases such as 1/15360,
            # so bound the quantiser instead of trusting the bitrate alone.
            options = {"qmin": "4", "qmax": "31"}
        vout = out.add_stream(codec, rate=vin.average_rate, options=options)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        vout.codec_context.bit_rate = bit_rate
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate, layout="stereo")
            aout.codec_context.bit_rate = audio_bit_rate
        streams = [vin] + ([ain] if ain is not None else [])
        for frame in inp.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                small = frame.reformat(width=width, height=height, format="yuv420p",
                                       interpolation="AREA")
                small.pts, small.time_base = frame.pts, frame.time_base
                out.mux(vout.encode(small))
            else:
                out.mux(aout.encode(frame))
        out.mux(vout.encode(None))
        if aout is not None:
            out.mux(aout.encode(None))
    return dst
