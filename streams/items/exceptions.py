"""Errors of the item-state replica and its owners."""

from streams.exceptions import AvrecError


class ItemStateError(AvrecError):
    """The item-state log or its snapshots cannot be read into a replica."""


class ItemLogTruncated(ItemStateError):
    """The item-deltas log no longer holds the records after the newest snapshot (retention ran out)."""
