"""Candidates from every source, the shared scoring core, and publishing the list.

One call serves many users at once: their ANN searches go to Milvus as one
batched request (nq = number of users) and the item lookups as one batched get.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from streams import topics
from streams.ranking import Candidates, RecommendedItem, UserState, history_ids, recommend, user_vector
from streams.records import Recommendation
from streams.records import RecommendedItem as RecommendedRecord
from streams.records import encode
from streams.services.context import WorkerContext

log = logging.getLogger(__name__)


class Recommender:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.ranking

    async def lists_for(self, users: dict[str, UserState | None], now: float) -> dict[str, list[RecommendedItem]]:
        """Each user's top-K at event time ``now`` (same time base as the offline evaluation)."""
        ctx, cfg = self.ctx, self.cfg
        vectors = {u: v for u, s in users.items() if (v := user_vector(s)) is not None}
        ann: dict[str, list[tuple[str, float]]] = {}
        if vectors:
            names = list(vectors)
            hits = await asyncio.to_thread(ctx.items.search_ids, np.stack([vectors[u] for u in names]),
                                           cfg.ann_candidates)
            ann = dict(zip(names, hits))
        fresh = ctx.fresh.recent(now, cfg.fresh_candidates)
        trending = ctx.trending.top(cfg.trending_candidates, now)
        per_user: dict[str, Candidates] = {}
        wanted: set[str] = {i for i, _ in fresh} | {i for i, _ in trending}
        for user, state in users.items():
            hist = history_ids(state)
            cooc = ctx.cooc.score_candidates_explained(hist, cfg.cooc_candidates) if hist else []
            cand = Candidates(
                ann=ann.get(user, []), cooc=[(j, s) for j, s, _ in cooc], fresh=fresh, trending=trending,
                cooc_via={j: h for j, _, h in cooc},
            )
            per_user[user] = cand
            wanted.update(i for i, _ in cand.ann)
            wanted.update(i for i, _ in cand.cooc)
            wanted.update(hist)
        items = await ctx.cache.get_many(wanted)
        takedowns = ctx.takedowns.current()
        return {
            user: recommend(users[user], cand, items, now, cfg, taken_down=takedowns)
            for user, cand in per_user.items()
        }

    async def publish(self, user_id: str, recs: list[RecommendedItem], source_event_id: str,
                      event_ts: float) -> None:
        record = Recommendation(
            user_id=user_id,
            items=[RecommendedRecord(item_id=r.item_id, score=round(r.score, 6), reasons=r.reasons) for r in recs],
            model_version=self.ctx.settings.model_version,
            source_event_id=source_event_id,
            event_ts=event_ts,
            produced_at=time.time(),
        )
        await topics.recommendations.send(key=user_id.encode(), value=encode(record))
