"""Item vectors for the offline evaluation: the real encoders, in-process, cached on disk.

The upload path sends ``item_text(title, description, tags)`` to Triton's
``item_encoder``, which runs the text tower and then the fusion model. MovieLens
(and any text-only JSONL) items have no audio or video, so the fused vector is
the fusion of the text vector alone: with the built-in mean fusion that *is* the
text vector (encoders/fusion.py); with a fusion checkpoint it is that model's
projection. Both are computed here without Triton, so an eval needs no stack.

Vectors are cached under ``cache_dir`` keyed by ``sha256(model id + text)``:
changing the text, the text model or the fusion weights misses the cache;
re-running the same dataset encodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from encoders.text import DEFAULT_MAX_TOKENS, item_text
from streams.evaluation.dataset import ItemMeta

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(".cache/eval-vectors")
TEXT_MODEL_ID = f"all-MiniLM-L6-v2/mean-pool/max{DEFAULT_MAX_TOKENS}"


def _fusion_id(checkpoint: Path | None) -> str:
    if not checkpoint:
        return "fusion:mean"
    p = Path(checkpoint)
    h = hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # the weights, not the file name
    return f"fusion:{h}"


def model_id(fusion_checkpoint: Path | None = None) -> str:
    return f"{TEXT_MODEL_ID}|{_fusion_id(fusion_checkpoint)}"


def content_key(text: str, mid: str) -> str:
    return hashlib.sha256(f"{mid}\x00{text}".encode()).hexdigest()


class VectorCache:
    """An append-only store of ``key -> float32 vector`` in one ``.npz`` per model id."""

    def __init__(self, cache_dir: Path, mid: str) -> None:
        self.path = Path(cache_dir) / f"{hashlib.sha256(mid.encode()).hexdigest()[:16]}.npz"
        self._data: dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path) as z:
                    self._data = dict(zip(z["keys"].tolist(), z["vecs"]))
            except (OSError, KeyError, ValueError) as exc:  # a torn write: re-encode rather than fail
                log.warning("vector cache %s unreadable (%s); starting afresh", self.path, exc)

    def get(self, key: str) -> np.ndarray | None:
        return self._data.get(key)

    def put_many(self, keys: list[str], vecs: np.ndarray) -> None:
        for k, v in zip(keys, vecs):
            self._data[k] = v
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        keys_all = list(self._data)
        np.savez(tmp, keys=np.array(keys_all), vecs=np.stack([self._data[k] for k in keys_all]))
        tmp.replace(self.path)  # atomic: a crash mid-write never leaves a half file


def _encode(texts: list[str], fusion_checkpoint: Path | None, device: str, dim: int) -> np.ndarray:
    import torch

    from encoders.fusion import Fusion
    from encoders.text import TextEncoder

    enc = TextEncoder().to(device)
    text = enc(texts).float()  # [N, D], unit rows
    fusion = Fusion(dim, fusion_checkpoint).to(device)
    vecs = torch.zeros(len(texts), 3, dim)
    vecs[:, 0] = text
    mask = torch.zeros(len(texts), 3)
    mask[:, 0] = 1.0  # text only: no audio, no video
    out = []
    for s in range(0, len(texts), 1024):
        fused, _, _ = fusion(vecs[s : s + 1024].to(device), mask[s : s + 1024].to(device))
        out.append(fused.float().cpu())
    return torch.cat(out).numpy().astype(np.float32)


def item_vectors(
    items: list[ItemMeta],
    cache_dir: Path = DEFAULT_CACHE_DIR,
    fusion_checkpoint: Path | None = None,
    device: str = "cpu",
    dim: int = 384,
) -> np.ndarray:
    """``[len(items), dim]`` float32 unit vectors, the same the upload path would index."""
    mid = model_id(fusion_checkpoint)
    cache = VectorCache(cache_dir, mid)
    texts = [item_text(it.title, it.description, list(it.tags)) for it in items]
    keys = [content_key(t, mid) for t in texts]
    out = np.zeros((len(items), dim), dtype=np.float32)
    missing = []
    for j, k in enumerate(keys):
        v = cache.get(k)
        if v is None or v.shape[0] != dim:
            missing.append(j)
        else:
            out[j] = v
    if missing:
        t0 = time.perf_counter()
        uniq = sorted({texts[j] for j in missing})
        enc = _encode(uniq, fusion_checkpoint, device, dim)
        by_text = dict(zip(uniq, enc))
        for j in missing:
            out[j] = by_text[texts[j]]
        cache.put_many([content_key(t, mid) for t in uniq], enc)
        log.info("encoded %d item texts in %.1f s (%d cached)", len(uniq), time.perf_counter() - t0,
                 len(items) - len(missing))
    else:
        log.info("all %d item vectors from the cache %s", len(items), cache.path)
    return out
