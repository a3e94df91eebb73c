"""Encoder throughput and latency through Triton, batch-1 and dynamic batching side by side.

    .venv/bin/python bench/encoders.py --triton-url 127.0.0.1:8001 --protocol grpc --json-out bench/results/encoders.json

For each model (text_encoder, audio_encoder, video_encoder, item_encoder) it measures, in one run:

* **batch-1**: one request at a time (the latency floor, and what you get without batching);
* **dynamic**: ``--concurrency`` single-item requests in flight, which Triton's dynamic batcher groups;
* **client-batched** (text only): one request carrying ``--text-batch`` strings.

and, as a ceiling on this machine, the same encoder called in-process on the same
inputs (no server, no serialisation), so the ratio shows what serving costs.
Texts are the MicroLens titles when ``--titles`` exists, otherwise generated sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoders.client import TritonClient  # noqa: E402
from streams.settings import TritonSettings  # noqa: E402

log = logging.getLogger("bench.encoders")


def load_titles(path: Path, n: int) -> list[str]:
    if path.exists():
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            titles = [row["title"] for row in csv.DictReader(fh) if row.get("title", "").strip()]
        if titles:
            return (titles * (n // len(titles) + 1))[:n]
    words = "music dance cat dog travel food guitar piano street city beach night party tutorial".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, 8)) for _ in range(n)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q)) if xs else float("nan")


async def run_mode(client: TritonClient, model: str, requests: list[dict], outputs: list[str],
                   concurrency: int, items_per_request: int = 1) -> dict:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(req: dict) -> None:
        async with sem:
            t0 = time.perf_counter()
            await client.infer(model, req, outputs)
            latencies.append(time.perf_counter() - t0)

    await one(requests[0])  # warm-up (connection, first allocation)
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    wall = time.perf_counter() - t0
    items = len(requests) * items_per_request
    return {
        "requests": len(requests), "items": items, "concurrency": concurrency,
        "items_per_s": round(items / wall, 1), "p50_ms": round(pct(latencies, 50), 2),
        "p99_ms": round(pct(latencies, 99), 2),
    }


def in_process(fn, batches: list, items: int) -> dict:
    fn(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    wall = time.perf_counter() - t0
    return {"items": items, "items_per_s": round(items / wall, 1)}


async def main(args: argparse.Namespace) -> dict:
    settings = TritonSettings(url=args.triton_url, protocol=args.protocol, timeout_s=120, max_retries=0)
    rng = np.random.default_rng(0)
    titles = load_titles(Path(args.titles), args.n_text)
    wav = [rng.uniform(-0.3, 0.3, int(args.audio_s * 16_000)).astype(np.float32) for _ in range(args.n_media)]
    frames = [rng.integers(0, 255, (8, 112, 112, 3), dtype=np.uint8) for _ in range(args.n_media)]
    text_req = [{"TEXT": np.array([[t.encode()]], dtype=np.object_)} for t in titles]
    out: dict = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                 "protocol": args.protocol, "results": {}}
    async with TritonClient(settings) as client:
        if not await client.ready():
            raise SystemExit(f"Triton at {args.triton_url} is not ready: start it with `avrec stack up`")
        res = out["results"]
        res["text_encoder"] = {
            "batch1": await run_mode(client, "text_encoder", text_req[: args.n_text // 8], ["EMBEDDING"], 1),
            "dynamic": await run_mode(client, "text_encoder", text_req, ["EMBEDDING"], args.concurrency),
        }
        tb = args.text_batch
        batched = [{"TEXT": np.array([[t.encode()] for t in titles[i:i + tb]], dtype=np.object_)}
                   for i in range(0, len(titles) - tb + 1, tb)]
        res["text_encoder"]["client_batched"] = await run_mode(
            client, "text_encoder", batched, ["EMBEDDING"], 2, items_per_request=tb)
        audio_req = [{"WAVEFORM": w[None]} for w in wav]
        video_req = [{"FRAMES": f[None]} for f in frames]
        item_req = [{"TEXT": text_req[i]["TEXT"], "WAVEFORM": wav[i][None], "FRAMES": frames[i][None]}
                    for i in range(args.n_media)]
        for model, reqs, outs in (
            ("audio_encoder", audio_req, ["EMBEDDING"]),
            ("video_encoder", video_req, ["EMBEDDING"]),
            ("item_encoder", item_req, ["FUSED"]),
        ):
            res[model] = {
                "batch1": await run_mode(client, model, reqs[: max(4, len(reqs) // 4)], outs, 1),
                "dynamic": await run_mode(client, model, reqs, outs, args.concurrency),
            }

    # In-process ceilings on this machine (same code and weights, no server).
    from encoders.audio import AudioEncoder
    from encoders.text import TextEncoder
    from encoders.video import VideoEncoder

    text = TextEncoder()
    tok_t0 = time.perf_counter()
    for i in range(0, len(titles), tb):
        text.tokenize(titles[i:i + tb])
    tok_s = time.perf_counter() - tok_t0
    out["in_process"] = {
        "text_batch": in_process(lambda b: text(b), [titles[i:i + tb] for i in range(0, len(titles), tb)], len(titles)),
        "text_tokenize_only_items_per_s": round(len(titles) / tok_s, 1),
        "text_batch1": in_process(lambda b: text(b), [[t] for t in titles[:200]], 200),
        "audio": in_process(AudioEncoder(), [[torch.from_numpy(w)] for w in wav], len(wav)),
        "video": in_process(VideoEncoder(), [[torch.from_numpy(f)] for f in frames], len(frames)),
    }
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triton-url", default="127.0.0.1:8001")
    p.add_argument("--protocol", choices=["http", "grpc"], default="grpc")
    p.add_argument("--titles", default=str(Path(__file__).resolve().parents[2] / "shared/data/microlens-sample/MicroLens-50k_titles.csv"))
    p.add_argument("--n-text", type=int, default=2048)
    p.add_argument("--text-batch", type=int, default=256)
    p.add_argument("--n-media", type=int, default=48)
    p.add_argument("--audio-s", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--json-out")
    a = p.parse_args()
    result = asyncio.run(main(a))
    text = json.dumps(result, indent=2)
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(text)
    sys.stdout.write(text + "\n")
