"""avrec's scoring core: taste vectors, trending, co-occurrence and the final ranking.

Pure Python + NumPy, no I/O: the live Faust worker and the offline prequential
evaluation call the same functions with the same ``RankingSettings``, so what is
measured offline is what runs live.

Typical flow per interaction: ``ingest_interaction(state, ...)``; per list:
``gather_candidates(state, cooc, cfg, ann, fresh, trending)`` (the ANN hits of
``user_vector(state)``, fresh uploads and ``trending.top(...)`` from the caller)
and call ``recommend(...)``.
"""

from streams.ranking.candidates import gather_candidates
from streams.ranking.config import EVENT_TYPES, SOURCES, EventWeights, RankingSettings, SourceWeights
from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.exceptions import RankingError, StateFormatError
from streams.ranking.ingest import ingest_interaction, new_cooccurrence, new_trending
from streams.ranking.recommend import Candidates, ItemInfo, RecommendedItem, explain_sources, recommend
from streams.ranking.trending import DecayedCounter
from streams.ranking.user_state import (
    HistoryEntry,
    UserState,
    apply_interaction,
    event_weight,
    history_ids,
    user_vector,
)

__all__ = [
    "EVENT_TYPES",
    "SOURCES",
    "Candidates",
    "CoOccurrence",
    "DecayedCounter",
    "EventWeights",
    "HistoryEntry",
    "ItemInfo",
    "RankingError",
    "RankingSettings",
    "RecommendedItem",
    "SourceWeights",
    "StateFormatError",
    "UserState",
    "apply_interaction",
    "event_weight",
    "explain_sources",
    "gather_candidates",
    "history_ids",
    "ingest_interaction",
    "new_cooccurrence",
    "new_trending",
    "recommend",
    "user_vector",
]
