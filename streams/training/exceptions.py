"""Errors of fitting the learned ranker."""

from streams.ranking.exceptions import RankingError


# A RankingError (and so an AvrecError): callers that fit a ranker and fall back to the weighted blend
# when they cannot (``avrec eval --live``) already catch RankingError around the fit.
class TrainingError(RankingError):
    """A ranker cannot be fit on the given log (e.g. no example to learn from)."""
