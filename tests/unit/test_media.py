"""Media ingestion: the URI policy, fetching, and decoding of generated media.

No network beyond a loopback HTTP server; no stack. Media is synthesised per
test session with :mod:`tests.mediagen`.
"""

from __future__ import annotations

import http.server
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.media import (
    MediaDecodeError,
    MediaError,
    MediaFetchError,
    MediaPolicyError,
    MediaResolver,
    MediaSource,
    MediaTooLarge,
    decode_audio,
    decode_video_frames,
    load_item_media,
    probe,
)
from encoders.media.decode import _apply_rotation
from streams.settings import EncoderSettings
from tests.mediagen import has_encoder, make_video, make_wav, ramp_level

MB = 1024 * 1024


def _resolver(roots: list[Path], hosts: list[str] | None = None, max_bytes: int = 10 * MB,
              timeout_s: float = 5.0) -> MediaResolver:
    return MediaResolver(roots=roots, hosts=hosts or [], max_bytes=max_bytes, timeout_s=timeout_s)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))


def _means(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


# -- generated media, made once ------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "tone": make_video(root / "tone.mp4", seconds=2.0, pattern="bars", tone_hz=440.0),
        "ramp": make_video(root / "ramp.mp4", seconds=4.0, fps=12, pattern="ramp", with_audio=False),
        "short": make_video(root / "short.mp4", seconds=0.25, fps=12, pattern="ramp", with_audio=False),
        "center": make_video(root / "center.mp4", seconds=1.0, size=(128, 64), pattern="center",
                             with_audio=False),
        "noise": make_video(root / "noise.mp4", seconds=1.0, pattern="noise", with_audio=False),
        "wav": make_wav(root / "tone.wav", seconds=1.5, tone_hz=1000.0),
        "faststart": make_video(root / "faststart.mp4", seconds=3.0, pattern="gradient",
                                faststart=True),
    }


# -- policy: file:// -----------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root with one file, and a sibling directory outside it with a secret."""
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "clip.mp4").write_bytes(b"x" * 100)
    (outside / "secret.mp4").write_bytes(b"secret")
    return allowed, outside


def test_file_inside_root_resolves_to_real_path(roots):
    allowed, _ = roots
    src = _resolver([allowed]).fetch(f"file://{allowed}/clip.mp4")
    assert src.path == (allowed / "clip.mp4").resolve()
    assert src.data is None
    assert src.size == 100


def test_file_uri_localhost_and_upper_case_scheme(roots):
    allowed, _ = roots
    resolver = _resolver([allowed])
    assert resolver.fetch(f"file://localhost{allowed}/clip.mp4").path == allowed / "clip.mp4"
    assert resolver.fetch(f"FILE://{allowed}/clip.mp4").path == allowed / "clip.mp4"


@pytest.mark.parametrize(
    "suffix",
    [
        "/../outside/secret.mp4",
        "/../../../../../../etc/passwd",
        "/%2e%2e/outside/secret.mp4",  # percent-encoded '..' is decoded, then normalised
        "/sub/../../outside/secret.mp4",
    ],
)
def test_path_traversal_rejected(roots, suffix):
    allowed, _ = roots
    with pytest.raises(MediaPolicyError, match="outside the allowed media roots") as info:
        _resolver([allowed]).fetch(f"file://{allowed}{suffix}")
    assert info.value.uri.endswith(suffix)


def test_traversal_that_stays_inside_root_is_allowed(roots):
    allowed, _ = roots
    (allowed / "sub").mkdir()
    src = _resolver([allowed]).fetch(f"file://{allowed}/sub/../clip.mp4")
    assert src.path == allowed / "clip.mp4"


def test_symlink_escaping_root_rejected(roots):
    allowed, outside = roots
    (allowed / "link.mp4").symlink_to(outside / "secret.mp4")
    (allowed / "linkdir").symlink_to(outside, target_is_directory=True)
    resolver = _resolver([allowed])
    with pytest.raises(MediaPolicyError, match="outside"):
        resolver.fetch(f"file://{allowed}/link.mp4")
    with pytest.raises(MediaPolicyError, match="outside"):
        resolver.fetch(f"file://{allowed}/linkdir/secret.mp4")


def test_symlink_within_root_allowed(roots):
    allowed, _ = roots
    (allowed / "alias.mp4").symlink_to(allowed / "clip.mp4")
    assert _resolver([allowed]).fetch(f"file://{allowed}/alias.mp4").path == allowed / "clip.mp4"


def test_root_name_prefix_is_not_containment(tmp_path):
    # /x/allowed must not admit /x/allowed-evil/...
    allowed = tmp_path / "allowed"
    evil = tmp_path / "allowed-evil"
    allowed.mkdir()
    evil.mkdir()
    (evil / "a.mp4").write_bytes(b"a")
    with pytest.raises(MediaPolicyError):
        _resolver([allowed]).fetch(f"file://{evil}/a.mp4")


def test_root_that_is_a_symlink(tmp_path, roots):
    allowed, _ = roots
    link_root = tmp_path / "root-link"
    link_root.symlink_to(allowed, target_is_directory=True)
    src = _resolver([link_root]).fetch(f"file://{link_root}/clip.mp4")
    assert src.path == allowed / "clip.mp4"


def test_missing_file_is_fetch_error(roots):
    allowed, _ = roots
    with pytest.raises(MediaFetchError, match="not found"):
        _resolver([allowed]).fetch(f"file://{allowed}/nope.mp4")


def test_directory_is_fetch_error(roots):
    allowed, _ = roots
    (allowed / "dir.mp4").mkdir()
    with pytest.raises(MediaFetchError, match="not a regular file"):
        _resolver([allowed]).fetch(f"file://{allowed}/dir.mp4")


def test_oversized_file_rejected_before_reading(roots):
    allowed, _ = roots
    with pytest.raises(MediaTooLarge, match="100 bytes, limit is 99"):
        _resolver([allowed], max_bytes=99).fetch(f"file://{allowed}/clip.mp4")
    assert _resolver([allowed], max_bytes=100).fetch(f"file://{allowed}/clip.mp4").size == 100


def test_no_roots_disables_file_uris(roots):
    allowed, _ = roots
    with pytest.raises(MediaPolicyError, match="no media roots"):
        _resolver([]).fetch(f"file://{allowed}/clip.mp4")


def test_file_uri_with_remote_host_rejected(roots):
    allowed, _ = roots
    with pytest.raises(MediaPolicyError, match="remote host"):
        _resolver([allowed]).fetch(f"file://fileserver{allowed}/clip.mp4")


@pytest.mark.parametrize("uri", [None, "", "   "])
def test_empty_uri_rejected(roots, uri):
    with pytest.raises(MediaPolicyError, match="empty"):
        _resolver([roots[0]]).fetch(uri)


def test_bare_path_rejected_with_hint(roots):
    allowed, _ = roots
    bare = f"{allowed}/clip.mp4"
    with pytest.raises(MediaPolicyError, match=f"use file://{bare}"):
        _resolver([allowed]).fetch(bare)
    with pytest.raises(MediaPolicyError, match="no scheme"):
        _resolver([allowed]).fetch("clip.mp4")


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://example.com/a.mp4",
        "data:video/mp4;base64,AAAA",
        "gopher://example.com/a",
        "s3://bucket/a.mp4",
        "javascript:alert(1)",
        "rtsp://example.com/stream",
    ],
)
def test_other_schemes_rejected_by_name(roots, uri):
    scheme = uri.split(":", 1)[0]
    with pytest.raises(MediaPolicyError, match=f"scheme '{scheme}' is not allowed"):
        _resolver([roots[0]], hosts=["example.com"]).fetch(uri)


# -- policy: http(s) -----------------------------------------------------------


def test_http_host_policy_without_network():
    resolver = _resolver([], hosts=["Media.Example.COM", "cdn.example.com:8443"])
    resolver.check("http://media.example.com/a.mp4")
    resolver.check("https://MEDIA.example.com:9000/a.mp4")  # a bare entry admits any port
    resolver.check("https://cdn.example.com:8443/a.mp4")
    with pytest.raises(MediaPolicyError, match="'cdn.example.com' is not in the allowed"):
        resolver.check("https://cdn.example.com/a.mp4")  # entry pins port 8443
    with pytest.raises(MediaPolicyError, match="'evil.com' is not in the allowed"):
        resolver.check("http://evil.com/a.mp4")
    with pytest.raises(MediaPolicyError, match="not in the allowed"):
        resolver.check("http://media.example.com.evil.com/a.mp4")
    with pytest.raises(MediaPolicyError, match="credentials"):
        resolver.check("http://user:pw@media.example.com/a.mp4")
    with pytest.raises(MediaPolicyError, match="invalid port"):
        resolver.check("http://media.example.com:99999/a.mp4")


def test_from_settings():
    settings = EncoderSettings(media_roots=[Path("/srv/media")], media_hosts=["cdn.example.com"],
                               media_max_bytes=1234, media_timeout_s=3.5)
    resolver = MediaResolver.from_settings(settings)
    assert resolver.roots == [Path(os.path.realpath("/srv/media"))]
    assert resolver.max_bytes == 1234 and resolver.timeout_s == 3.5
    resolver.check("https://cdn.example.com/x.mp4")
    with pytest.raises(MediaPolicyError):
        resolver.check("https://other.example.com/x.mp4")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes for the loopback server; ``server.files`` maps paths to bodies."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802  (http.server's naming)
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        port = self.server.server_address[1]
        if self.path in files:
            self._send(200, files[self.path])
        elif self.path == "/redirect-same":
            self._redirect("/media/tone.mp4")
        elif self.path == "/redirect-other-host":
            self._redirect(f"http://localhost:{port}/media/tone.mp4")
        elif self.path == "/redirect-loop":
            self._redirect("/redirect-loop")
        elif self.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * MB))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif self.path == "/big-chunked":
            # No Content-Length: only the streamed byte count can catch it.
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 16384)
        elif self.path == "/slow-headers":
            time.sleep(1.5)
            self._send(200, b"late")
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # slow handlers must not hold up shutdown

    def handle_error(self, request, client_address):
        # The client hanging up mid-body is the point of several tests.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture
def http_server(media):
    """A loopback HTTP server for one test, shut down (bounded) afterwards."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.files = {"/media/tone.mp4": media["tone"].read_bytes()}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_http_allowed_host_downloads_and_decodes(http_server, media):
    resolver = _resolver([], hosts=["127.0.0.1"])
    src = resolver.fetch(f"{http_server}/media/tone.mp4")
    assert src.path is None
    assert src.data == media["tone"].read_bytes()
    frames = decode_video_frames(src, num_frames=4, size=32)
    assert frames.shape == (4, 32, 32, 3)
    assert len(decode_audio(src)) > 16000


def test_http_host_not_allowed(http_server):
    with pytest.raises(MediaPolicyError, match="'127.0.0.1' is not in the allowed"):
        _resolver([], hosts=["localhost"]).fetch(f"{http_server}/media/tone.mp4")


def test_http_host_with_pinned_port(http_server):
    port = int(http_server.rsplit(":", 1)[1])
    assert _resolver([], hosts=[f"127.0.0.1:{port}"]).fetch(f"{http_server}/media/tone.mp4").size > 0
    with pytest.raises(MediaPolicyError):
        _resolver([], hosts=[f"127.0.0.1:{port + 1}"]).fetch(f"{http_server}/media/tone.mp4")


def test_http_same_host_redirect_followed(http_server, media):
    src = _resolver([], hosts=["127.0.0.1"]).fetch(f"{http_server}/redirect-same")
    assert src.data == media["tone"].read_bytes()
    assert src.uri.endswith("/redirect-same")


def test_http_redirect_to_other_host_refused(http_server):
    # localhost is even on the allow-list: any change of host is refused.
    resolver = _resolver([], hosts=["127.0.0.1", "localhost"])
    with pytest.raises(MediaPolicyError, match="redirect to another host"):
        resolver.fetch(f"{http_server}/redirect-other-host")


def test_http_redirect_loop_bounded(http_server):
    with pytest.raises(MediaFetchError, match="redirects"):
        _resolver([], hosts=["127.0.0.1"]).fetch(f"{http_server}/redirect-loop")


def test_http_404_is_fetch_error(http_server):
    with pytest.raises(MediaFetchError, match="HTTP 404"):
        _resolver([], hosts=["127.0.0.1"]).fetch(f"{http_server}/missing.mp4")


def test_http_declared_length_too_large(http_server):
    with pytest.raises(MediaTooLarge, match="Content-Length"):
        _resolver([], hosts=["127.0.0.1"], max_bytes=MB).fetch(f"{http_server}/big-declared")


def test_http_streamed_body_too_large(http_server):
    with pytest.raises(MediaTooLarge, match="body exceeds the limit of 100000"):
        _resolver([], hosts=["127.0.0.1"], max_bytes=100_000).fetch(f"{http_server}/big-chunked")


def test_http_slow_server_times_out(http_server):
    # The error is the deadline's, not the server's answer (no wall-clock bound: a busy CI machine is slow).
    with pytest.raises(MediaFetchError, match="timed out"):
        _resolver([], hosts=["127.0.0.1"], timeout_s=0.3).fetch(f"{http_server}/slow-headers")


def test_http_trickling_body_hits_overall_deadline(http_server):
    # Each byte arrives well inside the per-read timeout; the total does not.
    with pytest.raises(MediaFetchError, match="exceeded 0.5s"):
        _resolver([], hosts=["127.0.0.1"], timeout_s=0.5).fetch(f"{http_server}/trickle")


def test_http_connection_refused_is_fetch_error():
    with pytest.raises(MediaFetchError, match="download failed"):
        _resolver([], hosts=["127.0.0.1"], timeout_s=2).fetch("http://127.0.0.1:9/a.mp4")


# -- decoding: audio -----------------------------------------------------------


def test_audio_from_video_is_16k_mono_tone(media):
    wave = decode_audio(media["tone"], sample_rate=16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 2.0 * 16000) < 0.05 * 2.0 * 16000  # AAC priming/padding
    assert np.abs(wave).max() <= 1.0
    assert 0.3 < np.abs(wave).max() < 0.8  # the 0.5-amplitude tone survived downmixing
    assert abs(_peak_hz(wave, 16000) - 440.0) < 3.0


def test_audio_other_rate_and_max_seconds(media):
    wave = decode_audio(media["tone"], sample_rate=8000, max_seconds=1.0)
    assert len(wave) == 8000
    assert abs(_peak_hz(wave, 8000) - 440.0) < 3.0


def test_audio_from_wav(media):
    wave = decode_audio(media["wav"])
    assert abs(len(wave) - 24000) <= 1
    assert abs(_peak_hz(wave, 16000) - 1000.0) < 2.0
    assert np.isclose(np.abs(wave).max(), 0.5, atol=0.01)


def test_audio_missing_stream_raises(media):
    with pytest.raises(MediaDecodeError, match="no audio stream") as info:
        decode_audio(media["ramp"], uri="file:///x/ramp.mp4")
    assert info.value.uri == "file:///x/ramp.mp4"


# -- decoding: video -----------------------------------------------------------


def test_video_frames_shape_and_uniform_sampling(media):
    frames = decode_video_frames(media["ramp"], num_frames=8, size=112)
    assert frames.shape == (8, 112, 112, 3) and frames.dtype == np.uint8
    # 48 frames; targets at slice centres pick frames 2/3, 8/9, ... ; brightness tells which.
    n = 48
    expected = [ramp_level(int((i + 0.5) * n / 8), n) for i in range(8)]
    np.testing.assert_allclose(_means(frames), expected, atol=6)
    assert np.all(np.diff(_means(frames)) > 0)


def test_video_fewer_frames_than_requested_are_repeated(media):
    frames = decode_video_frames(media["short"], num_frames=8, size=32)  # a 3-frame clip
    assert frames.shape == (8, 32, 32, 3)
    levels = _means(frames)
    assert len(np.unique(levels.round())) == 3
    assert np.all(np.diff(levels) >= 0)  # repeats keep time order


def test_video_single_frame_and_sizes(media):
    one = decode_video_frames(media["ramp"], num_frames=1, size=16)
    assert one.shape == (1, 16, 16, 3)
    assert abs(_means(one)[0] - ramp_level(24, 48)) < 6  # the middle of the clip


def test_video_center_crop(media):
    frames = decode_video_frames(media["center"], num_frames=2, size=32)
    red, green = frames[..., 0].mean(), frames[..., 1].mean()
    assert green > 180 and red < 60, (red, green)  # the red side margins were cropped away


def test_video_noise_has_variance(media):
    frames = decode_video_frames(media["noise"], num_frames=4, size=64)
    assert frames.std() > 40
    assert not np.array_equal(frames[0], frames[-1])


def test_video_seek_path_matches_single_pass(media):
    single = decode_video_frames(media["ramp"], num_frames=6, size=48)
    seeked = decode_video_frames(media["ramp"], num_frames=6, size=48, seek_threshold_s=1.0)
    assert np.abs(single.astype(int) - seeked).mean() < 2


def test_video_decode_cap_bounds_work(media):
    # Only the first 10 of 48 frames may be decoded: later targets reuse the last one.
    frames = decode_video_frames(media["ramp"], num_frames=8, size=16, max_decode_frames=10)
    levels = _means(frames)
    assert levels.max() <= ramp_level(9, 48) + 6
    assert np.all(np.diff(levels) >= 0)


@pytest.mark.parametrize("fmt", ["m4v", "matroska"])
def test_video_without_stream_duration(tmp_path, fmt):
    # Raw m4v has no duration at all (decimating sampler); Matroska has only
    # the container's (target sampler on the container duration).
    path = make_video(tmp_path / f"clip.{fmt}", seconds=4.0, fps=12, pattern="ramp",
                      with_audio=False, container_format=fmt)
    frames = decode_video_frames(path, num_frames=8, size=32)
    levels = _means(frames)
    assert frames.shape == (8, 32, 32, 3)
    assert np.all(np.diff(levels) > 0)
    assert levels[0] < ramp_level(12, 48) and levels[-1] > ramp_level(36, 48)  # spans the clip


@pytest.mark.skipif(not has_encoder("libx264"), reason="no libx264 encoder in this PyAV")
def test_video_h264(tmp_path):
    path = make_video(tmp_path / "h264.mp4", seconds=2.0, pattern="ramp", codec="libx264")
    frames = decode_video_frames(path, num_frames=4, size=32)
    assert probe(path)["video_codec"] == "h264"
    assert np.all(np.diff(_means(frames)) > 0)


def test_video_missing_stream_raises(media):
    with pytest.raises(MediaDecodeError, match="no video stream"):
        decode_video_frames(media["wav"])


def test_rotation_turns_like_a_player():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 1] = 255  # top-right marked
    # Display matrix -90 (the usual portrait phone clip): rotate clockwise.
    assert _apply_rotation(img, -90)[1, 1, 0] == 255
    assert _apply_rotation(img, 90)[0, 0, 0] == 255
    assert _apply_rotation(img, 180)[1, 0, 0] == 255
    assert _apply_rotation(img, 0) is img


# -- sources and probe ---------------------------------------------------------


def test_sources_path_str_bytes_and_mediasource_agree(media):
    path = media["ramp"]
    data = path.read_bytes()
    results = [
        decode_video_frames(s, num_frames=3, size=24)
        for s in (path, str(path), data, MediaSource(uri="x", path=path), MediaSource(uri="x", data=data))
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_probe(media):
    info = probe(media["tone"])
    assert info["has_audio"] and info["has_video"]
    assert info["video_codec"] == "mpeg4" and info["audio_codec"] == "aac"
    assert info["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert (info["width"], info["height"]) == (96, 64)
    silent = probe(media["ramp"])
    assert silent["has_audio"] is False and silent["audio_codec"] is None
    wav = probe(media["wav"])
    assert wav["has_video"] is False and wav["audio_codec"] == "pcm_s16le"


# -- corrupt input -------------------------------------------------------------


def _all_decoders(source, uri):
    return [
        lambda: decode_audio(source, uri=uri),
        lambda: decode_video_frames(source, uri=uri),
        lambda: probe(source, uri=uri),
    ]


def test_truncated_mp4_raises_decode_error(media, tmp_path):
    data = media["tone"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    for call in _all_decoders(cut, "file:///m/cut.mp4"):
        with pytest.raises(MediaDecodeError) as info:
            call()
        assert info.value.uri == "file:///m/cut.mp4"
        assert "Invalid data" in info.value.reason  # FFmpeg's own words


def test_truncated_faststart_mp4_raises_decode_error(media):
    # With the index first, FFmpeg opens the cut file and stops quietly at the
    # cut; the coverage check has to notice.
    data = media["faststart"].read_bytes()
    cut = data[: int(len(data) * 0.3)]
    with pytest.raises(MediaDecodeError, match="truncated or corrupt|Invalid data"):
        decode_video_frames(cut, uri="mem://cut")
    with pytest.raises(MediaDecodeError, match="truncated or corrupt|Invalid data"):
        decode_audio(cut, uri="mem://cut")
    assert decode_video_frames(data, num_frames=2).shape == (2, 112, 112, 3)  # uncut decodes


@pytest.mark.parametrize("payload", [b"", b"\x00" * 10, np.random.default_rng(7).bytes(20_000)])
def test_garbage_bytes_raise_decode_error(payload, tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(payload)
    for source in (payload, path):
        for call in _all_decoders(source, "file:///m/garbage.mp4"):
            with pytest.raises(MediaDecodeError) as info:
                call()
            assert "file:///m/garbage.mp4" in str(info.value)


def test_no_raw_av_exception_escapes(tmp_path, media):
    # Corrupt the middle of a valid file: whatever FFmpeg makes of it, the
    # caller sees frames or a MediaDecodeError, never an av exception.
    data = bytearray(media["tone"].read_bytes())
    rng = np.random.default_rng(3)
    for i in rng.integers(len(data) // 4, len(data), 2000):
        data[int(i)] ^= 0x5A
    for call in _all_decoders(bytes(data), "mem://flipped"):
        try:
            call()
        except MediaDecodeError:
            pass


def test_playlist_formats_not_opened(tmp_path):
    # An HLS playlist would make FFmpeg open the URLs inside it.
    playlist = tmp_path / "p.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n"
                        "#EXT-X-ENDLIST\n")
    with pytest.raises(MediaDecodeError, match="cannot open"):
        probe(playlist)


# -- load_item_media -----------------------------------------------------------


def test_load_item_media(media):
    resolver = _resolver([media["tone"].parent])
    video_uri = f"file://{media['tone']}"
    audio_uri = f"file://{media['wav']}"
    wave, frames = load_item_media(resolver, audio_uri, video_uri, sample_rate=16000,
                                   max_audio_s=1.0, num_frames=4, frame_size=32)
    assert wave is not None and len(wave) == 16000
    assert frames is not None and frames.shape == (4, 32, 32, 3)
    # No audio URI: the video's own audio track is not borrowed.
    wave, frames = load_item_media(resolver, None, video_uri, sample_rate=16000, max_audio_s=1.0,
                                   num_frames=4, frame_size=32)
    assert wave is None and frames is not None
    assert load_item_media(resolver, None, None, sample_rate=16000, max_audio_s=1.0, num_frames=4,
                           frame_size=32) == (None, None)


def test_load_item_media_errors_are_media_errors(media):
    resolver = _resolver([media["tone"].parent])
    with pytest.raises(MediaPolicyError):
        load_item_media(resolver, f"file://{media['tone'].parent}/../../../../etc/passwd", None)
    with pytest.raises(MediaDecodeError):
        load_item_media(resolver, f"file://{media['ramp']}", None)  # video without audio
    with pytest.raises(MediaError):
        load_item_media(resolver, None, f"file://{media['tone'].parent}/missing.mp4")
