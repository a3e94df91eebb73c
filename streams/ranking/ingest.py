"""The one path an interaction takes through the scoring state, shared by the live worker and the offline eval.

Keeping the order of operations here (and not in each caller) guarantees both
build identical user states, co-occurrence counts and trending scores from the
same event stream: the live worker applies :func:`ingest_user` to the user's
state and ships the item ops it returns (``streams/items/``); the offline
replay applies them at once (:func:`ingest_interaction`); both apply an op with
the same :func:`streams.ranking.item_ops.apply_op`.
"""

from __future__ import annotations

from typing import Any

from streams.ranking.config import RankingSettings
from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.item_ops import ItemOp, apply_op, pair_ops, with_trend
from streams.ranking.trending import DecayedCounter
from streams.ranking.user_state import UserState, apply_interaction, event_weight, history_ids


def ingest_interaction(
    state: UserState,
    event_id: str,
    item_id: str,
    item_vec: Any,
    event_type: str,
    watch_ratio: float | None,
    ts: float,
    cfg: RankingSettings,
    cooc: CoOccurrence | None = None,
    trending: DecayedCounter | None = None,
) -> bool:
    """Apply one interaction to the user state, co-occurrence and trending; False for a duplicate event.

    :func:`ingest_user` applied to the user state, then its item ops applied to
    ``cooc`` and ``trending`` at once (the offline evaluation's path; the live
    worker ships the ops to the items' owners instead).
    """
    ops = ingest_user(state, event_id, item_id, item_vec, event_type, watch_ratio, ts, cfg, cooc)
    if ops is None:
        return False
    for op in ops:
        apply_op(op, cooc, trending)
    return True


def ingest_user(
    state: UserState,
    event_id: str,
    item_id: str,
    item_vec: Any,
    event_type: str,
    watch_ratio: float | None,
    ts: float,
    cfg: RankingSettings,
    cooc: CoOccurrence | None = None,
) -> list[ItemOp] | None:
    """Apply one interaction to the user state; the item ops it implies, or None for a duplicate event.

    * user state: :func:`apply_interaction`;
    * trending: ``+w`` at ``ts`` when the effective weight ``w`` is positive
      (negative feedback does not make an item less trending: it was still engaged with);
    * co-occurrence (only with ``cooc``, which gives the pair window): only on the
      user's *first* positive interaction with the item (not already in their
      recent history), paired with the history *before* it, so a user re-watching
      an item does not inflate its counts.

    The ops depend only on the state before the event and the event itself, so a
    re-delivered event applied to the same state yields the same ops.
    """
    prior = history_ids(state)
    first_positive = item_id not in prior
    if not apply_interaction(state, event_id, item_id, item_vec, event_type, watch_ratio, ts, cfg):
        return None
    w = event_weight(event_type, watch_ratio, cfg)
    if w <= 0:
        return []
    ops = pair_ops(cooc, prior, item_id, 1.0) if cooc is not None and first_positive else []
    return with_trend(ops, item_id, ts, w)


def new_trending(cfg: RankingSettings) -> DecayedCounter:
    """A trending counter configured from ``cfg``."""
    return DecayedCounter(cfg.trending_half_life_s, cfg.trending_max_items)


def new_cooccurrence(cfg: RankingSettings, counts: Any = None, pops: Any = None) -> CoOccurrence:
    """A co-occurrence store configured from ``cfg`` (plain dicts unless ``counts``/``pops`` are given)."""
    return CoOccurrence(counts, pops, max_neighbors=cfg.cooc_max_neighbors, window=cfg.cooc_window,
                        recency_half_life=cfg.cooc_recency_half_life, score_window=cfg.cooc_score_window,
                        pair_half_life=cfg.cooc_pair_half_life)
