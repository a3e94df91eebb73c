"""Fit the learned ranker on a logged stream: what ``avrec ranker fit`` and ``avrec eval --live`` run.

The log is replayed in time order through the same scoring core as the live
worker (``CoreState``: user states, co-occurrence, trending), exactly as the
evaluation's training phase does, and for each interaction in the last
``learn_frac`` share whose item is new to the user, the candidate pool just
before it (``replay_candidates``, the evaluation hybrid's pool) and the item
chosen make one example (:class:`streams.training.learner.RankerLearner`). The
worker loads the JSON that :meth:`LinearRanker.save` writes
(``AVREC_RANKING__RANKER_PATH``).

It reads the log and replays it with the evaluation's data layer
(``streams.evaluation.dataset``, ``.state``), never its protocol, methods or
reports: the evaluation calls into this package, not the other way round.
"""

from __future__ import annotations

import logging

import numpy as np

from streams.evaluation.dataset import EvalLog
from streams.evaluation.state import Catalogue, CoreState, SeenLog, feature_context, replay_candidates, replay_order
from streams.ranking import RankingSettings
from streams.ranking.learned import LinearRanker
from streams.training.exceptions import TrainingError
from streams.training.learner import RankerLearner
from streams.training.window import MAX_LEARN_EVENTS, learn_window_start

log = logging.getLogger(__name__)


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
    # The pools and the item regression as a learned-fusion worker would see them.
    cfg = ranking.model_copy(update={"fusion": "learned"})
    learner = RankerLearner(cfg, "ranker-fit")
    seen = SeenLog()
    for i, ev in replay_order(log_, cat, n):
        if i >= learn_start and not seen.has(ev.user_id, ev.item):
            learner.learn(core.users, feature_context(core, cat, ev.user_id, ev.ts),
                          replay_candidates(core, cat, cfg, ev.user_id, ev.ts), cat.ids[ev.item])
        seen.add(ev.user_id, ev.item)
        core.apply(ev, cat)
        cat.count(ev.item)
    ranker = learner.fit(core.users)
    if ranker is None:
        raise TrainingError(f"no interaction among the last {n - learn_start} of {n} had its item among the "
                            "user's candidates: nothing to fit a ranker on (a longer log, or a larger learn_frac)")
    return ranker
