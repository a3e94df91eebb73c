"""Errors raised by the scoring core (bad inputs, unreadable serialised state)."""

from streams.exceptions import AvrecError


class RankingError(AvrecError):
    """An input to the scoring core is invalid (unknown event type, wrong vector shape, bad state)."""


class StateFormatError(RankingError):
    """A serialised ranking state could not be read back (wrong version or corrupted fields)."""
