"""Fit the learned ranker on a logged stream: what ``avrec ranker fit`` and ``avrec eval --live`` run.

The log is replayed in time order through the same scoring core as the live
worker (``CoreState``: user states, co-occurrence, trending), exactly as the
evaluation's training phase does, and for each interaction in the last
``learn_frac`` share whose item is new to the user, the hybrid's candidate pool
just before it and the item chosen make one example
(:meth:`streams.evaluation.methods.Hybrid.learn`). The worker loads the JSON
that :meth:`LinearRanker.save` writes (``AVREC_RANKING__RANKER_PATH``).
"""

from __future__ import annotations

import logging
import numpy as np

from streams.evaluation.dataset import EvalLog
from streams.evaluation.methods import Hybrid
from streams.evaluation.state import Catalogue, CoreState, SeenLog, replay_order
from streams.ranking import RankingSettings
from streams.ranking.exceptions import RankingError
from streams.ranking.learned import LinearRanker

log = logging.getLogger(__name__)


# Each example holds a few hundred candidates' features (~40 KB as float32, and the fit makes a float64
# copy of them all): this bounds a fit's memory to a few GB however long the log (about 4 GB at its
# peak for the ~26k examples 40,000 MovieLens interactions give), and its learning replay to minutes.
MAX_LEARN_EVENTS = 40_000


def learn_window_start(n: int, learn_frac: float, max_events: int = MAX_LEARN_EVENTS) -> int:
    """Index of the first of the last ``learn_frac`` of ``n`` interactions, at most ``max_events`` of them:
    where a ranker starts learning (here and in the evaluation's replay alike)."""
    if max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    return n - min(int(learn_frac * n), max_events)


def fit_ranker(log_: EvalLog, vectors: np.ndarray, ranking: RankingSettings, until: int | None = None,
               learn_frac: float = 0.25, max_events: int = MAX_LEARN_EVENTS) -> LinearRanker:
    """Replay interactions ``[0, until)`` (default: all) and fit a ranker on the last ``learn_frac`` of
    them, at most the last ``max_events``."""
    if not 0.0 < learn_frac <= 1.0:
        raise ValueError(f"learn_frac must be in (0, 1], got {learn_frac}")
    n = log_.n_interactions if until is None else min(int(until), log_.n_interactions)
    learn_start = learn_window_start(n, learn_frac, max_events)
    cat = Catalogue(log_.items, vectors)
    core = CoreState(ranking)
    learner = Hybrid(core, cat, ranking.model_copy(update={"fusion": "learned"}), "ranker-fit")
    seen = SeenLog()
    for i, ev in replay_order(log_, cat, n):
        if i >= learn_start and not seen.has(ev.user_id, ev.item):
            learner.learn(ev)
        seen.add(ev.user_id, ev.item)
        core.apply(ev, cat)
        cat.count(ev.item)
    learner.start_test()
    if learner.ranker is None:
        raise RankingError(f"no interaction among the last {n - learn_start} of {n} had its item among the "
                           "user's candidates: nothing to fit a ranker on (a longer log, or a larger learn_frac)")
    return learner.ranker
