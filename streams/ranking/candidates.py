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
    explore: list[str] | None = None,
) -> Candidates:
    """Candidates from every source for one user; co-occurrence from the user's history.

    The recency weighting and window come from ``cfg``, not from how ``cooc`` was built:
    the evaluation shares one state between methods with other settings. ``explore``: the
    :func:`unexplored` fresh uploads, when the caller has them for a whole batch (computed here if not).
    """
    hist = history_ids(state)
    hits = cooc.score_candidates_explained(
        hist, cfg.cooc_candidates, recency_half_life=cfg.cooc_recency_half_life,
        score_window=cfg.cooc_score_window or cfg.cooc_window) if hist else []
    if explore is None:
        explore = unexplored(fresh, cooc, cfg)
    return Candidates(ann=list(ann), cooc=[(j, s) for j, s, _ in hits], fresh=fresh, trending=trending,
                      cooc_via={j: h for j, _, h in hits}, explore=explore)


def unexplored(fresh: list[tuple[str, float]], cooc: CoOccurrence, cfg: RankingSettings) -> list[str]:
    """The fresh uploads fewer than ``explore_max_users`` users have interacted with: what the
    exploration slots draw from (RankingSettings.explore_*); none when there are no such slots.
    The same for every user of a batch (it depends on the shared fresh list only)."""
    return [i for i, _ in fresh if cooc.pops.get(i, 0.0) < cfg.explore_max_users] if cfg.explore_slots else []
