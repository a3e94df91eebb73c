"""Fitting the learned ranker (fusion "learned") on logged interactions: ``avrec ranker fit``.

Modules: ``window`` (which interactions a fit learns from), ``learner``
(examples of candidate features and the item chosen, then the ``LinearRanker``),
``ranker_fit`` (replay a log and fit: ``fit_ranker``), ``exceptions``, ``cli``
(``register(app)``). The worker loads the file a fit writes
(``AVREC_RANKING__RANKER_PATH``); ``avrec eval`` learns its ranker through the
same ``RankerLearner`` and window, so evaluation imports training, never the
reverse (training reads logs with the evaluation's data layer only).
"""

# Only the modules that import nothing of streams.evaluation: the evaluation imports these while its
# own package is initialising. ``fit_ranker`` lives in ``streams.training.ranker_fit``.
from streams.training.exceptions import TrainingError
from streams.training.learner import RankerLearner
from streams.training.window import MAX_LEARN_EVENTS, learn_window_start

__all__ = ["MAX_LEARN_EVENTS", "RankerLearner", "TrainingError", "learn_window_start"]
