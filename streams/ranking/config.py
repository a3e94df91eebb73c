"""Tuning knobs of the scoring core, with the reasoning behind each default.

``RankingSettings`` is a plain pydantic model so it nests into ``Settings`` as
``settings.ranking`` and every value can be overridden from the environment,
e.g. ``AVREC_RANKING__EVENT_WEIGHTS__VIEW=0.5`` or ``AVREC_RANKING__TOP_K=30``.
The live worker and the offline evaluation must pass the *same* instance so
they score identically.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventType = Literal["view", "like", "share", "comment", "complete", "skip", "dislike", "hide"]
EVENT_TYPES: tuple[str, ...] = ("view", "like", "share", "comment", "complete", "skip", "dislike", "hide")
# Only these two carry a meaningful watch ratio (how much of the item was played).
WATCH_RATIO_EVENTS: frozenset[str] = frozenset({"view", "complete"})
SOURCES: tuple[str, ...] = ("ann", "cooc", "fresh", "trending")


class EventWeights(BaseModel):
    """How much one event of each type pulls the user's taste vector toward (>0) or away from (<0) the item.

    Explicit, costly actions (share, complete) count more than a passive view;
    a skip is a weak negative, an explicit dislike/hide a strong one.
    """

    model_config = ConfigDict(extra="forbid")

    view: float = 0.3
    like: float = 1.0
    share: float = 1.5
    comment: float = 1.0
    complete: float = 1.2
    skip: float = -0.3
    dislike: float = -1.0
    hide: float = -1.5


class SourceWeights(BaseModel):
    """Weight of each candidate source's normalised score (each in [0, 1]) in the blended score.

    Co-occurrence (collaborative evidence from what users actually watch together)
    leads; the content similarity to the taste vector (``ann``) refines and breaks
    its ties and reaches items nobody has co-watched yet; fresh and trending are
    exploration / cold-start signals. Only the ratios matter. Chosen on a
    validation split of ml-100k (docs/QUALITY.md): the earlier ann-led blend
    (1.0 / 0.6 / 0.3 / 0.3) fell below plain item-kNN, because the cosine of two
    text vectors varies little and mapped to [0.5, 1] it still outweighed the
    co-occurrence signal. Small non-zero weights for ann, fresh and trending cost
    nothing measurable there and keep cold-start users and new uploads reachable.
    """

    model_config = ConfigDict(extra="forbid")

    ann: float = Field(default=0.2, ge=0)
    cooc: float = Field(default=1.0, ge=0)
    fresh: float = Field(default=0.1, ge=0)
    trending: float = Field(default=0.1, ge=0)


class RankingSettings(BaseModel):
    """Everything the scoring core needs; pure data, no I/O."""

    model_config = ConfigDict(extra="forbid")

    event_weights: EventWeights = Field(default_factory=EventWeights)
    # For view/complete the weight is ``event_weight * clamp(watch_ratio, floor, 1)``:
    # watching 80% counts 0.8 of a full view, while a view abandoned at 1% still
    # counts ``floor`` of one (the user did choose to open it). A missing
    # watch_ratio counts as 1. Set the floor to 0 to ignore zero-length views.
    watch_ratio_floor: float = Field(default=0.1, ge=0.0, le=1.0)
    # Taste decay: an event's contribution halves every half_life_s, so the
    # user vector follows what they watch *now* (a week: weekly habits persist,
    # a binge from last month fades).
    half_life_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Events of these types mark the item hidden: it is never recommended again.
    hide_event_types: tuple[EventType, ...] = ("dislike", "hide")

    source_weights: SourceWeights = Field(default_factory=SourceWeights)
    # How the sources' scores are combined (see streams/ranking/recommend.py):
    # "weighted": Σ_s weight_s · (score normalised to [0, 1]);
    # "rrf": reciprocal-rank fusion, Σ_s weight_s · (rrf_k + 1) / (rrf_k + 1 + rank_s),
    # which needs no score scale to be comparable across sources;
    # "learned": a ranker fit on logged interactions (streams/ranking/learned.py) scores every
    # candidate from its features; until one is fitted (ranker_path unset) the weighted blend ranks.
    # Learned is the default: its weights come from the data it is fit on, not from hand-tuning
    # on one dataset, and on the ml-100k validation split it beat the blend (docs/QUALITY.md).
    fusion: Literal["weighted", "rrf", "learned"] = "learned"
    rrf_k: float = Field(default=60.0, ge=0)
    # The fitted ranker the live worker loads at start (`avrec ranker fit` writes it); "" = none yet.
    ranker_path: str = ""
    # The item regression (EASE) fit with the ranker (streams/ranking/item_regression.py): its ridge
    # penalty λ (500: Steck's MovieLens-20M value, and the best of 20 to 10,000 on the ml-100k
    # validation split in session 4; 100 to 1,000 are within 1% as a ranker feature), how many
    # weights each item keeps, and how many of the most watched items it models (a dense float64
    # n x n inverse: 10,000 items take 1.1 GB at the fit's peak and 12-20 s; the rest score 0).
    item_regression_l2: float = Field(default=500.0, gt=0)
    item_regression_top_k: int = Field(default=200, ge=1)
    item_regression_max_items: int = Field(default=10_000, ge=1)
    # How many candidates each source contributes to one recommend() call; the
    # caller fetches this many and recommend() truncates to it, so both paths agree.
    ann_candidates: int = Field(default=200, ge=0)
    cooc_candidates: int = Field(default=100, ge=0)
    # Co-occurrence: a new positive item is paired with the user's last
    # ``cooc_window`` positive items (recent context; bounds the cost of one
    # event), and each item keeps at most ``cooc_max_neighbors`` neighbours.
    # 10 and 300 were chosen on a validation split of ml-100k (train 70%, score
    # 70-80%; never the test segment): HR@20 peaks at a window of 10 and falls on
    # both sides; more than 300 neighbours adds nothing (docs/QUALITY.md).
    cooc_window: int = Field(default=10, ge=1)
    cooc_max_neighbors: int = Field(default=300, ge=1)
    # Recency weighting of the history when scoring co-occurrence candidates: the
    # r-th most recent history item (r = 0 the newest) counts 0.5 ** (r / h), so what
    # the user just watched says most about what they watch next (sequential item-kNN).
    # 0 = every item counts the same (plain item-kNN). A half-life of 4 items and a
    # scoring window of the 20 most recent items were best on the ml-100k validation
    # split (3 to 6 and 10 to 30 are all within 1.5% of it; docs/QUALITY.md).
    cooc_recency_half_life: float = Field(default=4.0, ge=0)
    # How many recent history items score co-occurrence candidates (0 = cooc_window).
    # With the recency weights, items beyond ~4 half-lives add little either way.
    cooc_score_window: int = Field(default=20, ge=0)
    # Distance weighting of co-occurrence pairs: the new item's pair with the d-th most
    # recent history item (d = 0 the one just before) counts 0.5 ** (d / h); 0 = all count 1.
    # Off: on the validation split it changed HR@20 by under 1% at the live window.
    cooc_pair_half_life: float = Field(default=0.0, ge=0)
    # Fresh: items uploaded in the last fresh_window_s; the freshness score falls
    # linearly from 1 (just uploaded) to 0 (window edge).
    fresh_window_s: float = Field(default=48 * 3600.0, gt=0)
    fresh_candidates: int = Field(default=50, ge=0)
    # Trending: exponentially decayed engagement; 6 h follows the daily cycle.
    trending_half_life_s: float = Field(default=6 * 3600.0, gt=0)
    trending_candidates: int = Field(default=50, ge=0)
    # The trending counter keeps at most this many items (lowest pruned).
    trending_max_items: int = Field(default=50_000, ge=1)

    # -- evidence and cold start (docs/QUALITY.md, "Cold start") ----------------------------------
    # A source's weight grows with the evidence behind it. Trending: the blend's rank-based
    # trending score is multiplied by c / (c + trending_evidence), c the item's decayed event count,
    # so "trending" from three events (a new platform's first minutes) is noise that cannot outrank
    # the user's own signal, while an item with hundreds of events keeps nearly all of it
    # (0 = off). The learned ranker reads the count itself (log_trending).
    trending_evidence: float = Field(default=20.0, ge=0)
    # A user's first ``cold_start_events`` positive events lean on content. For a user with n of
    # them (1 <= n <= k), a learned ranker's relevance r (relative to the best candidate's) becomes
    #     r ** (1 - a) * c ** a,   a = cold_start_content_share * (k + 1 - n) / k,
    # c the candidate's cosine to the taste vector, min-max scaled over the pool: one like of a
    # food video then says more than any popularity count, and by the k-th event the ranker
    # carries the list again (0 = off). The weighted blend needs no lean: its content term is in
    # the sum, and trending_evidence keeps thin counts from outranking it. Chosen on the MicroLens
    # title benchmark; ml-100k checked (docs/QUALITY.md, "Cold start").
    cold_start_events: int = Field(default=5, ge=0)
    cold_start_content_share: float = Field(default=0.7, ge=0.0, le=1.0)
    # Exploration: in the lists of users still in their cold start (at most cold_start_events
    # positive events), at least this many slots (the last ones) go to unexplored fresh uploads
    # (fresh candidates fewer than explore_max_users users have interacted with), the one closest
    # to the user's taste first, each labelled "new upload: exploring"; an unexplored item the
    # ranking already lists counts. New items get their first events from the users whose taste
    # is least settled; established users' lists stay exploitative (on ml-100k a slot in every
    # list cost 1.7-2.3% HR@20; new uploads still reach them through the fresh source and the
    # fan-out). 0 = off.
    explore_slots: int = Field(default=1, ge=0)
    explore_max_users: int = Field(default=3, ge=1)

    # MMR: 1.0 = pure relevance, lower values trade relevance for diversity. 0.9 keeps
    # a diversity term at a cost within noise on the validation split (HR@20 0.2960
    # vs 0.2970 at 1.0; 0.8 with the earlier blend cost ~1%).
    mmr_lambda: float = Field(default=0.9, ge=0.0, le=1.0)
    # MMR reranks only this many best items by blended score (0 = all; never fewer
    # than k). It bounds the cost of a call; at λ = 0.9 the diversity penalty is at
    # most 0.1 of the top relevance, which items this far down rarely overcome.
    mmr_pool: int = Field(default=100, ge=0)
    # At most this many items of one creator in a list (0 = no cap).
    creator_cap: int = Field(default=2, ge=0)
    top_k: int = Field(default=20, ge=1)

    # Per-user memory bounds (they bound the size of a user's table record).
    history_len: int = Field(default=50, ge=1)  # recent positive items: reasons + co-occurrence context
    dedupe_window: int = Field(default=512, ge=1)  # event ids remembered to drop redelivered events
    # Items the user interacted with are never recommended; the set is an LRU of
    # this many ids (~40 bytes each serialised, so at most ~200 KB per user).
    # Beyond it the oldest interactions may be recommended again, which is fine.
    seen_max: int = Field(default=5000, ge=1)
    # Hidden/disliked items: an LRU as well, but large enough that only bots reach it.
    hidden_max: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "RankingSettings":
        sw = self.source_weights
        if sw.ann + sw.cooc + sw.fresh + sw.trending <= 0:
            raise ValueError("at least one source weight must be positive")
        return self

    def event_weight(self, event_type: str) -> float:
        """The configured base weight of ``event_type`` (raises KeyError for unknown types)."""
        if event_type not in EVENT_TYPES:
            raise KeyError(event_type)
        return float(getattr(self.event_weights, event_type))
