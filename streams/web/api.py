"""The read API on the worker's web port (the contract: docs/API.md; the document: /openapi.json).

* ``/health/live``, ``/health/ready``;
* ``GET /users/{user_id}/recommendations`` and ``GET /users/{user_id}`` (the dashboard's user
  inspector): answered by the worker owning the user (``api_routing``), ranked by the worker's own
  path (:meth:`Recommender.read_list`); reads only, nothing is written or published;
* ``GET /items/{item_id}`` and ``/items/{item_id}/similar``: any worker (item state is replicated);
* ``POST /feedback``: interactions validated as ``avrec produce`` does, sent to ``interactions``;
* ``/openapi.json`` and ``/docs``.

Bad input is a 4xx ``{"error": reason}``; a store that does not answer is a 503; neither touches
the agents.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiohttp import web as aioweb
from faust.web import View

from streams import topics
from streams.app import app
from streams.exceptions import AvrecError
from streams.ranking import UserState
from streams.records import encode
from streams.services import context
from streams.services.recommender import Recommender
from streams.tables import user_state
from streams.web import openapi
from streams.web.api_params import (MAX_FEEDBACK_BYTES, BadRequest, bool_param, check_id, exclude_param,
                                    feedback_records, int_param, page_params)
from streams.web.api_routing import forward_if_elsewhere
from streams.web.api_versions import encoder_versions


log = logging.getLogger(__name__)

INSPECTOR_LIST = 10  # the user inspector's list: the first page of /recommendations
INSPECTOR_CANDIDATES = 20  # per source
INSPECTOR_HISTORY = 50
REPLICA_READY_WAIT_S = 1.0

_recommender = None  # a Recommender of the current context


def _context():
    return context._context  # created by the first agent; the API never creates it


def _ctx():
    ctx = _context()
    if ctx is None:
        raise BadRequest("the worker is starting (connecting to Triton and Milvus, reading the item state); retry",
                         503)
    return ctx


def _rec():
    global _recommender
    ctx = _ctx()
    if _recommender is None or _recommender.ctx is not ctx:
        _recommender = Recommender(ctx)
    return _recommender


async def _answer(view: View, fn) -> object:
    """Run a handler; bad input and unavailable stores become JSON errors, never a crash."""
    try:
        return await fn()
    except BadRequest as exc:
        return view.json(exc.body(), status=exc.status)
    except AvrecError as exc:  # Milvus / Triton / Kafka wrappers: the reason is in the message
        log.warning("read API: %s", exc)
        return view.json({"error": f"a backing service failed: {exc}; retry"}, status=503)


def app_settings():
    """The worker's settings (those its context was created with)."""
    return _ctx().settings


def _rank_k() -> int:
    """Every read ranks the same ``k`` and slices it: MMR is greedy, so one ranking's pages are disjoint
    and consistent whatever ``n`` and ``offset`` ask for."""
    s = app_settings()
    return max(s.web.api_max_n, s.ranking.top_k)


def _state(user_id: str):
    raw = user_state.get(user_id)
    return UserState.from_dict(raw) if raw else None


def _known(state) -> bool:
    return state is not None and (state.n_events > 0 or bool(state.seen))


def _list_json(ranked, start: int, stop: int) -> list[dict]:
    out = []
    for r in ranked.items[start:stop]:
        info = ranked.catalogue.get(r.item_id)
        d = {"item_id": r.item_id, "score": float(r.score), "title": info.title if info else None,
             "reasons": list(r.reasons), "sources": {s: float(c) for s, c in r.sources.items()}}
        if ranked.explanations is not None:
            d["explain"] = ranked.explanations[r.item_id]
        out.append(d)
    return out


async def _versions(ranked) -> dict:
    ctx = _ctx()
    ranker = ctx.active.ranker
    return {"model_version": ranked.model_version, "base_model_version": ctx.settings.model_version,
            "fusion": ctx.settings.ranking.fusion, "ranker": ranker.fingerprint() if ranker is not None else None,
            "encoders": await _encoder_versions(ctx.settings.encoders)}


async def _encoder_versions(settings) -> dict:
    return await encoder_versions(settings)


# ------------------------------------------------------------------ health


@app.page("/health/live")
class Live(View):
    async def get(self, request):
        return self.json({"status": "live"})


@app.page("/health/ready")
class Ready(View):
    async def get(self, request):
        reason = None
        ctx = _context()
        assigned = app.consumer.assignment() if ctx is not None else set()
        behind = None
        if ctx is None:
            reason = "the worker context is not ready (connecting to Triton and Milvus, reading the item state)"
        elif app.rebalancing or app.in_recovery:
            reason = "rebalancing or recovering tables"
        elif not assigned:
            reason = "no partitions assigned to this worker (more workers than partitions, or joining the group)"
        else:
            try:
                targets = await ctx.replica.end_offsets()
                if not await ctx.replica.caught_up(REPLICA_READY_WAIT_S, targets):
                    behind = ctx.replica.behind(targets)
                    reason = f"the item-state replica is {behind} records behind"
            except Exception as exc:  # noqa: BLE001 - readiness reports, it does not fail
                reason = f"cannot reach Kafka to check the item-state replica: {exc!r}"
        if reason is not None:
            return self.json({"status": "not_ready", "reason": reason}, status=503)
        return self.json({"status": "ready", "partitions": len(assigned), "model_version": ctx.active.model_version})


# ------------------------------------------------------------------ users


@app.page("/users/{user_id}/recommendations")
class UserRecommendations(View):
    async def get(self, request, user_id: str):
        return await _answer(self, lambda: self._get(request, user_id))

    async def _get(self, request, user_id: str):
        max_n = app_settings().web.api_max_n
        check_id(user_id, "user id")
        n, offset = page_params(request.query, max_n)
        exclude = exclude_param(request.query.getall("exclude", []), max_n * 10)
        explain = bool_param(request.query, "explain")
        if (routed := await forward_if_elsewhere(self, request, user_id)) is not None:
            return routed
        state = _state(user_id)
        ranked = await _rec().read_list(user_id, state, time.time(), _rank_k(), exclude, explain)
        body = {"user_id": user_id, "known_user": _known(state), "model_version": ranked.model_version,
                "n": n, "offset": offset, "items": _list_json(ranked, offset, offset + n),
                "served_by": str(app.conf.canonical_url)}
        if explain:
            body["versions"] = await _versions(ranked)
        return self.json(body)


@app.page("/users/{user_id}")
class UserInspector(View):
    async def get(self, request, user_id: str):
        return await _answer(self, lambda: self._get(request, user_id))

    async def _get(self, request, user_id: str):
        check_id(user_id, "user id")
        if (routed := await forward_if_elsewhere(self, request, user_id)) is not None:
            return routed
        state = _state(user_id)
        rec = _rec()
        ranked = await rec.read_list(user_id, state, time.time(), _rank_k())
        recent = list(reversed(state.seen))[:INSPECTOR_HISTORY] if state is not None else []
        kinds = {h.item_id: h.event_type for h in state.history} if state is not None else {}
        infos = await rec.ctx.cache.get_many(recent)
        history = [{"item_id": i, "title": infos[i].title if i in infos else None, "type": kinds.get(i)}
                   for i in recent]
        cand = ranked.candidates
        candidates = {}
        for source, pairs in (("ann", cand.ann), ("cooc", cand.cooc), ("fresh", cand.fresh),
                              ("trending", cand.trending)):
            top = sorted(pairs, key=lambda t: (-t[1], t[0]))[:INSPECTOR_CANDIDATES]
            candidates[source] = [{"item_id": i, "score": float(s),
                                   "title": ranked.catalogue[i].title if i in ranked.catalogue else None}
                                  for i, s in top]
        return self.json({"user_id": user_id, "known_user": _known(state), "model_version": ranked.model_version,
                          "n_events": state.n_events if state is not None else 0, "history": history,
                          "list": _list_json(ranked, 0, INSPECTOR_LIST), "candidates": candidates,
                          "served_by": str(app.conf.canonical_url)})


# ------------------------------------------------------------------ items


async def _item_rows(item_id: str) -> dict | None:
    ctx = _ctx()
    rows = await asyncio.to_thread(ctx.items.get, [item_id])
    return rows.get(item_id)


async def _neighbours(row: dict, n: int) -> list[dict]:
    """The ``n`` items closest to ``row``'s fused vector (itself and taken-down items left out)."""
    ctx = _ctx()
    hits = (await asyncio.to_thread(ctx.items.search_ids, _vector(row), n + 1))[0]
    hits = [(i, s) for i, s in hits if i != row["item_id"] and i not in ctx.takedowns][:n]
    infos = await ctx.cache.get_many(i for i, _ in hits)
    return [{"item_id": i, "score": float(s), "title": infos[i].title if i in infos else None} for i, s in hits]


def _vector(row: dict) -> np.ndarray:
    return np.asarray(row["vector"], dtype=np.float32)[None, :]


@app.page("/items/{item_id}")
class ItemInspector(View):
    async def get(self, request, item_id: str):
        return await _answer(self, lambda: self._get(request, item_id))

    async def _get(self, request, item_id: str):
        check_id(item_id, "item id")
        ctx = _ctx()
        row = await _item_rows(item_id)
        down = item_id in ctx.takedowns
        if row is None and not down:
            raise BadRequest(f"item {item_id!r} is not in the catalogue", 404)
        if row is None:  # taken down: its row and vectors were deleted
            return self.json({"item_id": item_id, "title": None, "creator_id": None, "created_at": None,
                              "available": False, "taken_down": True,
                              "modalities": {"text": False, "audio": False, "video": False}, "neighbours": []})
        present = set((row.get("modalities") or "").split(","))
        # The takedown reaches this worker's item state before its owner has deleted the Milvus row: the
        # item state decides, so the inspector never shows a taken-down item as available.
        return self.json({
            "item_id": item_id, "title": row.get("title"), "creator_id": row.get("creator_id"),
            "created_at": row.get("created_at", 0) / 1000.0,
            "available": bool(row.get("available", True)) and not down,
            "taken_down": down, "tags": [t for t in (row.get("tags") or "").split(" ") if t],
            "duration_s": row.get("duration_s") or None,
            "modalities": {m: m in present for m in ("text", "audio", "video")},
            "neighbours": [] if down else await _neighbours(row, INSPECTOR_LIST),
        })


@app.page("/items/{item_id}/similar")
class SimilarItems(View):
    async def get(self, request, item_id: str):
        return await _answer(self, lambda: self._get(request, item_id))

    async def _get(self, request, item_id: str):
        check_id(item_id, "item id")
        n = int_param(request.query, "n", 10, 1, app_settings().web.api_max_n)
        row = await _item_rows(item_id)
        gone = item_id in _ctx().takedowns  # before the owner deletes its row too (see ItemInspector)
        if row is None or gone:
            raise BadRequest(f"item {item_id!r} " + ("was taken down" if gone else "is not in the catalogue"), 404)
        return self.json({"item_id": item_id, "items": await _neighbours(row, n)})


# ------------------------------------------------------------------ feedback


@app.page("/feedback")
class Feedback(View):
    async def post(self, request):
        return await _answer(self, lambda: self._post(request))

    async def _post(self, request):
        if request.content_length is not None and request.content_length > MAX_FEEDBACK_BYTES:
            raise BadRequest(f"the body is {request.content_length} bytes; the limit is {MAX_FEEDBACK_BYTES}", 413)
        try:
            body = await request.read()
        except aioweb.HTTPRequestEntityTooLarge:
            raise BadRequest(f"the body is larger than the limit of {MAX_FEEDBACK_BYTES} bytes", 413) from None

        records = feedback_records(body)
        # Keyed by user id, Kafka's default partitioner (Faust's producer): the partition of the user's
        # other events, so the owner applies them in order.
        sent = [await topics.interactions.send(key=r.kafka_key(), value=encode(r)) for r in records]
        await asyncio.gather(*sent)  # the broker's acks: 202 means the events are in the log
        return self.json({"accepted": len(records), "event_ids": [r.event_id for r in records]}, status=202)


# ------------------------------------------------------------------ the document


@app.page("/openapi.json")
class OpenAPI(View):
    async def get(self, request):
        return self.json(openapi.document())


@app.page("/docs")
class Docs(View):
    async def get(self, request):
        return self.html(openapi.html_page())
