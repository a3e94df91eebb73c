"""Offline prequential (test-then-train) evaluation of the live recommender against baselines.

``avrec eval DATASET`` replays a dataset (``streams.replay`` readers) in time
order through the *same* scoring core the worker runs (``streams.ranking``):
the first ``train_frac`` of interactions only train; for every later one each
method's top-K for that user is scored against the item before the event is
applied. See docs/QUALITY.md for the protocol, the metrics and the results.

Modules: ``dataset`` (log loading), ``vectors`` (item vectors, cached),
``state`` (catalogue + core state), ``methods`` (hybrid and baselines),
``protocol`` (the replay), ``metrics``, ``report``/``markdown`` (outputs),
``runner`` (one run end to end), ``cli`` (``register(app)``).
"""

from streams.evaluation.protocol import DEFAULT_METHODS, EvalConfig, EvalResult, run_prequential

__all__ = ["DEFAULT_METHODS", "EvalConfig", "EvalResult", "run_prequential"]
