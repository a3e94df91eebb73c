"""Uploads: decode -> fetch and decode media -> encode through Triton -> Milvus -> fan-out.

A batch of events is handled together: media decodes run concurrently in
threads, all items go to Triton's ``item_encoder`` in one concurrent burst
(its dynamic batcher groups them), and Milvus gets one upsert. Bad records,
media that fails to decode and items Triton rejects are dead-lettered; Triton or
Milvus being down holds the batch (no ack, no offset commit) until they return.

Once an item is in Milvus, its ``up`` record goes into the item-state log (every
worker's fresh window and item cache follow it) and ``uploaded`` to the item's
owner (interactions parked for the item are released).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import orjson

from encoders.client import ItemInputs, ItemVectors
from encoders.exceptions import InferenceError, MediaError
from encoders.media import load_item_media
from encoders.text import item_text
from streams import topics
from streams.items import wire
from streams.items.partitioning import partition_for
from streams.ranking import ItemInfo
from streams.records import RecordError, Upload, decode_upload
from streams.services.context import WorkerContext
from streams.services.deadletters import send_dead_letter
from streams.services.retry import until_done

log = logging.getLogger(__name__)
MODALITY_NAMES = ("text", "audio", "video")


class UploadProcessor:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.item_partitions = ctx.settings.kafka.item_partitions
        self.user_partitions = ctx.settings.kafka.topics.interactions.partitions

    async def handle(self, events: list) -> None:
        uploads: list[tuple[object, Upload]] = []
        for ev in events:
            try:
                up = decode_upload(ev.message.value)
            except RecordError as exc:
                await send_dead_letter(ev, exc.stage, exc.reason)
                continue
            if ev.message.key != up.kafka_key():
                await send_dead_letter(ev, "key", f"record key {ev.message.key!r} is not the upload's item_id "
                                                  f"{up.item_id!r} (key uploads by item_id)")
                continue
            if up.item_id in self.ctx.takedowns:
                log.info("upload of taken-down item %s ignored", up.item_id)
                continue
            uploads.append((ev, up))
        if not uploads:
            return
        media = await asyncio.gather(*(self._media(up) for _, up in uploads), return_exceptions=True)
        ready: list[tuple[object, Upload, ItemInputs]] = []
        for (ev, up), res in zip(uploads, media):
            if isinstance(res, MediaError):
                await send_dead_letter(ev, "media", res)
            elif isinstance(res, BaseException):
                await send_dead_letter(ev, "media", f"{type(res).__name__}: {res}")
            else:
                wav, frames = res
                text = item_text(up.title, up.description, up.tags)
                ready.append((ev, up, ItemInputs(up.item_id, text, wav, frames)))
        if not ready:
            return
        inputs = [inp for _, _, inp in ready]
        results = await until_done("encode uploads", lambda: self.ctx.triton.encode_items(inputs),
                                   self.ctx.settings.worker)
        rows, encoded = [], []
        for (ev, up, _), res in zip(ready, results):
            if isinstance(res, InferenceError):
                await send_dead_letter(ev, "encode", res)
                continue
            rows.append(self._row(up, res))
            encoded.append((ev, up, res))
        if rows:
            await until_done("upsert items", lambda: asyncio.to_thread(self.ctx.items.upsert, rows),
                             self.ctx.settings.worker)
        for _, up, vec in encoded:
            self.ctx.cache.put(ItemInfo(
                item_id=up.item_id, creator_id=up.creator_id, title=up.title, vector=vec.fused,
                created_at=up.created_at, available=True,
                modality_vectors={m: getattr(vec, m) for m, on in zip(MODALITY_NAMES, vec.mask) if on},
            ), duration_s=up.duration_s, version=up.event_id)
            key = up.kafka_key()
            q = partition_for(key, self.item_partitions)
            await topics.item_deltas.send(key=key, value=wire.encode_up(up.item_id, up.event_id, up.created_at,
                                                                        up.creator_id), partition=q)
            await topics.item_commands.send(key=key, value=wire.encode_uploaded(up.item_id), partition=q)
        await self._fan_out(encoded)

    async def _media(self, up: Upload):
        if not up.audio_uri and not up.video_uri:
            return None, None
        enc = self.ctx.settings.encoders
        async with self.ctx.media_slots:
            return await asyncio.to_thread(
                load_item_media, self.ctx.resolver, up.audio_uri, up.video_uri,
                sample_rate=enc.sample_rate, max_audio_s=enc.max_audio_s,
                num_frames=enc.video_frames, frame_size=enc.frame_size,
            )

    @staticmethod
    def _row(up: Upload, vec: ItemVectors) -> dict:
        return {
            "item_id": up.item_id,
            "vector": np.asarray(vec.fused, np.float32).tolist(),
            "text_vec": np.asarray(vec.text, np.float32).tolist(),
            "audio_vec": np.asarray(vec.audio, np.float32).tolist(),
            "video_vec": np.asarray(vec.video, np.float32).tolist(),
            "creator_id": up.creator_id,
            "title": up.title[:1000],
            "tags": " ".join(up.tags)[:4000],
            "created_at": int(up.created_at * 1000),
            "available": True,
            "modalities": ",".join(m for m, on in zip(MODALITY_NAMES, vec.mask) if on),
            "duration_s": float(up.duration_s or 0.0),
        }

    async def _fan_out(self, encoded: list) -> None:
        """New-content fan-out: ask the closest users' partitions to refresh their lists."""
        cfg = self.ctx.settings.worker
        if not encoded or cfg.fanout_users <= 0:
            return
        fused = np.stack([np.asarray(v.fused, np.float32) for _, _, v in encoded])
        hits = await until_done("search users for fan-out",
                                lambda: asyncio.to_thread(self.ctx.users.search, fused, cfg.fanout_users), cfg)
        # One refresh per user per batch, for the new item closest to them: a refreshed
        # list ranks every fresh upload anyway, so a second request would only rank it again.
        closest: dict[str, tuple[float, Upload]] = {}
        for (_, up, _), row in zip(encoded, hits):
            for hit in row:
                if hit.score >= cfg.fanout_min_similarity and hit.score > closest.get(hit.id, (-2.0, None))[0]:
                    closest[hit.id] = (hit.score, up)
        now = time.time()
        for user, (score, up) in sorted(closest.items(), key=lambda t: -t[1][0]):  # the closest users first
            request = {"command": "refresh", "user_id": user, "item_id": up.item_id, "event_id": up.event_id,
                       "ts": up.created_at, "similarity": score, "requested_at": now}
            key = user.encode()
            await topics.user_commands.send(key=key, value=orjson.dumps(request),
                                            partition=partition_for(key, self.user_partitions))
