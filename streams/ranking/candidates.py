"""One user's candidate pool: what the live worker ranks and the offline evaluation replays.

Both call :func:`gather_candidates`, so the two cannot drift apart. The sources
that need no user (fresh uploads, trending) and the ANN hits come from the caller:
a batched Milvus search live, an exact NumPy search offline; fresh and trending
are computed once per batch and shared by its users.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.ranking.config import RankingSettings
from streams.ranking.cooccurrence import CoOccurrence
from streams.ranking.recommend import Candidates
from streams.ranking.user_state import UserState, history_ids


def gather_candidates(
    state: UserState | None,
    cooc: CoOccurrence,
    cfg: RankingSettings,
    ann: Sequence[tuple[str, float]],
    fresh: list[tuple[str, float]],
    trending: list[tuple[str, float]],
) -> Candidates:
    """Candidates from every source for one user; co-occurrence from the user's history.

    The recency weighting and window come from ``cfg``, not from how ``cooc`` was built:
    the evaluation shares one state between methods with other settings.
    """
    hist = history_ids(state)
    hits = cooc.score_candidates_explained(
        hist, cfg.cooc_candidates, recency_half_life=cfg.cooc_recency_half_life,
        score_window=cfg.cooc_score_window or cfg.cooc_window) if hist else []
    # Exploration draws from fresh uploads that few users have touched yet (RankingSettings.explore_*).
    explore = [i for i, _ in fresh if cooc.pops.get(i, 0.0) < cfg.explore_max_users] if cfg.explore_slots else []
    return Candidates(ann=list(ann), cooc=[(j, s) for j, s, _ in hits], fresh=fresh, trending=trending,
                      cooc_via={j: h for j, _, h in hits}, explore=explore)
