"""Futures the worker started and then no longer needs."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def abandon(task: asyncio.Future, what: str) -> None:
    """Cancel ``task`` if still running, or read its outcome, so a failure nobody will await is not
    reported again by asyncio as "Task exception was never retrieved" (logged at debug as ``what``)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("%s: %r", what, exc)
