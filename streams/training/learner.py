"""Collect (candidate features, chosen item) examples during a replay, then fit a ``LinearRanker`` on them.

Knows nothing of where the events come from: the caller replays a log, and for
each interaction it learns from passes the feature context and candidate pool
the user had just before it (``learn``), then asks for the ranker (``fit``).
``avrec ranker fit`` and the evaluation's learned-fusion hybrid both drive it,
so the ranker the eval scores is the one a deployment would ship.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from streams.ranking import Candidates, RankingSettings, UserState
from streams.ranking.item_regression import ItemRegression
from streams.ranking.learned import FeatureContext, LinearRanker, fit_item_regression, training_example

log = logging.getLogger(__name__)


def item_model(users: Mapping[str, UserState], cfg: RankingSettings) -> ItemRegression | None:
    """EASE on every user's watched items so far (None before anyone watched anything)."""
    if not users:
        return None
    return fit_item_regression(users.values(), cfg)


class RankerLearner:
    """The examples of one replay's learning window, and the ranker fit on them."""

    def __init__(self, cfg: RankingSettings, name: str) -> None:
        self.cfg = cfg
        self.name = name  # only for the log lines
        # The item regression the examples' features use: fit on what came before the first of
        # them, so no example's features have seen its own interaction.
        self.item_model: ItemRegression | None = None
        self.examples: list[tuple[np.ndarray, int]] = []
        self.events = 0
        self.fit_seconds = 0.0

    def learn(self, users: Mapping[str, UserState], ctx: FeatureContext, cand: Candidates, chosen: str) -> None:
        """One example from the state just before the user chose ``chosen`` (``users``: every user's state
        then; the first call fits the examples' item regression on it)."""
        if self.events == 0:
            self.item_model = item_model(users, self.cfg)
        self.events += 1
        ex = training_example(ctx, cand, chosen, self.item_model)
        if ex is not None:
            # float32: the examples dominate a fit's memory (see window.MAX_LEARN_EVENTS).
            self.examples.append((ex[0].astype(np.float32), ex[1]))

    def fit(self, users: Mapping[str, UserState]) -> LinearRanker | None:
        """The ranker fit on the examples so far (None without any), which are then dropped."""
        t0 = time.perf_counter()
        ranker = None
        if self.examples:
            # The ranker ships with an item regression refit on everything up to now, as
            # `avrec ranker fit` deploys it (the weights were learnt with the earlier one).
            ranker = LinearRanker.fit(self.examples, item_model=item_model(users, self.cfg))
            log.info("%s: ranker fit on %d examples (the chosen item was a candidate in %d of %d learning "
                     "events) in %.1f s; weights: %s", self.name, len(self.examples), len(self.examples),
                     self.events, time.perf_counter() - t0,
                     ", ".join(f"{f} {w:+.3f}" for f, w in ranker.describe()))
        else:
            log.warning("%s: no learning examples; it ranks with the weighted blend", self.name)
        self.fit_seconds = time.perf_counter() - t0
        self.examples = []
        return ranker
