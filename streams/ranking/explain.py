"""Why an item has its score: per-source and per-feature contributions (the read API's ``explain=true``).

Every explanation says which number its contributions add up to (``adds_up_to`` and ``total``),
so a client can check ``sum(contributions) + intercept == total``:

* the weighted blend and reciprocal-rank fusion: the contributions are the sources'
  ``weight_s * norm_s`` (:class:`streams.ranking.recommend.RecommendedItem.sources`) and they add
  up to the item's ``score`` itself;
* the learned ranker (:class:`streams.ranking.learned.LinearRanker`): each feature's
  ``weight_f * (x_f - mean_f) / scale_f`` adds up to the ranker's score ``s`` of the item (the
  model has no intercept: 0). The listed ``score`` is ``exp(s - max_ranker_score)``, the item's
  probability relative to the best candidate's (:mod:`streams.ranking.recommend`), so the
  explanation carries ``max_ranker_score`` too. For a user in their first events the listed score
  leans on content (``RankingSettings.cold_start_*``): it is then
  ``exp(s - max_ranker_score) ** (1 - cold_start_share) * content ** cold_start_share``, and the
  explanation carries both numbers.

Pure functions: the caller passes the ranker, the features and the scores it ranked with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from streams.ranking.learned import FEATURES, FeatureContext, LinearRanker, candidate_features
from streams.ranking.recommend import RecommendedItem


def blend_explanation(item: RecommendedItem, method: str) -> dict:
    """The blend's explanation: its source contributions, which add up to the score."""
    return {
        "method": method,
        "adds_up_to": "score",
        "total": float(item.score),
        "intercept": 0.0,
        "contributions": {s: float(c) for s, c in item.sources.items()},
    }


def learned_explanation(contributions: Sequence[float], features: Sequence[float], ranker_score: float,
                        max_ranker_score: float, content_lean: tuple[float, float] | None = None) -> dict:
    """One item's learned-ranker explanation from its row of :meth:`LinearRanker.contributions`
    (``content_lean``: the item's ``RecommendedItem.content_lean``)."""
    out = {
        "method": "learned",
        "adds_up_to": "ranker_score",
        "total": float(ranker_score),
        "intercept": 0.0,
        "contributions": {f: float(c) for f, c in zip(FEATURES, contributions)},
        "features": {f: float(x) for f, x in zip(FEATURES, features)},
        "ranker_score": float(ranker_score),
        "max_ranker_score": float(max_ranker_score),
        "score_is": "exp(ranker_score - max_ranker_score)",
    }
    if content_lean is not None:
        share, content = content_lean
        out.update(cold_start_share=float(share), content=float(content),
                   score_is="exp(ranker_score - max_ranker_score) ** (1 - cold_start_share)"
                            " * content ** cold_start_share")
    return out


def explain_items(items: Sequence[RecommendedItem], method: str, ranker: LinearRanker | None = None,
                  ctx: FeatureContext | None = None, learned: Mapping[str, float] | None = None) -> dict[str, dict]:
    """item_id -> explanation for a ranked list.

    With ``ranker``, ``ctx`` and the ``learned`` scores the list was ranked with, each item gets the
    ranker's feature contributions (recomputed for the listed items only: a row's features do not
    depend on the other candidates, so they are the ones it was scored with); otherwise the blend's.
    Every explanation also carries the per-source contributions (``sources``).
    """
    out: dict[str, dict] = {}
    if ranker is not None and ctx is not None and learned and items:
        ids = [r.item_id for r in items]
        feats = candidate_features(ctx, ids, ranker.item_model)
        contrib = ranker.contributions(feats)
        finite = [s for s in learned.values() if math.isfinite(s)]
        top = max(finite) if finite else 0.0
        for r, row, x in zip(items, contrib, feats):
            # The score the list was ranked with (not the contributions' sum): a client checks one against
            # the other, and the listed score against exp(score - top).
            score = float(learned.get(r.item_id, np.sum(row)))
            out[r.item_id] = learned_explanation(row.tolist(), x.tolist(), score, top, r.content_lean)
    else:
        for r in items:
            out[r.item_id] = blend_explanation(r, method)
    for r in items:
        out[r.item_id]["sources"] = {s: float(c) for s, c in r.sources.items()}
    return out
