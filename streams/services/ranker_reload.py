"""The ranker the worker ranks with, and picking up a refitted one without a restart.

A ranker goes stale as the catalogue and the audience move, so it is refit on a
schedule (``avrec ranker fit LOG --out $AVREC_RANKING__RANKER_PATH``, e.g. from
cron). ``LinearRanker.save`` replaces the file atomically; the worker polls its
stamp every ``worker.ranker_reload_s`` and swaps in the new model when it reads
as a valid ranker. A file that does not (a half-copied file, a ranker of another
version) is reported once and the worker keeps ranking with the model it has:
a bad deploy never takes lists down, and fixing the file is enough to recover.

The ranker and the ``model_version`` its lists are published with change
together (:class:`ActiveRanker`), so every list names the model that made it,
even when a reload lands while a batch is being published.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.ranking.exceptions import StateFormatError
from streams.ranking.learned import LinearRanker, published_model_version

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]  # (inode, size, mtime ns): changes when the file is replaced or rewritten


@dataclass(frozen=True)
class ActiveRanker:
    """The fitted ranker (None: rank with the weighted blend) and the version its lists carry."""

    ranker: LinearRanker | None
    model_version: str

    @classmethod
    def of(cls, base_version: str, ranker: LinearRanker | None) -> ActiveRanker:
        return cls(ranker, published_model_version(base_version, ranker))


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class RankerFile:
    """Watches one ranker file: :meth:`poll` returns the model it holds after each change that reads well
    (and on the first poll)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Unknown until the first poll, which reads the file whatever its stamp: a refit written
        # between the worker's start-up load and this watch starting is not missed (and the model
        # loaded at start, read again, changes nothing: see adopt).
        self._stamp: Stamp | None | bool = False

    def poll(self) -> LinearRanker | None:
        """The ranker now in the file if the file changed since the last poll and reads as one; else None.

        A file that is gone or unreadable is logged once per change and yields None (keep the current
        model); the next change to the file is tried again.
        """
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        if stamp is None:
            log.warning("the ranker file %s is gone; still ranking with the model loaded before", self.path)
            return None
        try:
            return LinearRanker.load(self.path)
        except StateFormatError as exc:
            log.error("not reloading the ranker: %s. Still ranking with the model loaded before; "
                      "the file is read again when it changes", exc)
            return None


def adopt(ctx: Any, ranker: LinearRanker, source: Path) -> bool:
    """Make ``ranker`` the one ``ctx`` ranks with, unless it is the same model; True when it changed."""
    current = ctx.active.ranker
    if current is not None and ranker.fingerprint() == current.fingerprint():
        return False  # rewritten with the same model: nothing changes, not even the version lists carry
    ctx.active = ActiveRanker.of(ctx.settings.model_version, ranker)
    if (on_change := getattr(ctx, "on_model_change", None)) is not None:
        on_change(ctx)  # the model info metric (streams/web/instrument.py)
    log.info("ranker reloaded from %s: lists are now published as %s (%s)", source, ctx.active.model_version,
             ranker.summary())
    return True


async def watch_ranker(ctx: Any, watched: RankerFile, every_s: float) -> None:
    """Poll the ranker file forever (a worker task); a failed poll is logged and the next one tried."""
    while True:
        await asyncio.sleep(every_s)
        try:
            # A stat per poll, a JSON read only after a change: off the event loop all the same.
            ranker = await asyncio.to_thread(watched.poll)
        except Exception:  # noqa: BLE001 - this task must outlive any one bad poll
            log.exception("polling the ranker file %s failed; trying again in %.0f s", watched.path, every_s)
            continue
        if ranker is not None:
            adopt(ctx, ranker, watched.path)


def start_ranker_watch(ctx: Any) -> asyncio.Task | None:
    """The polling task, when the worker ranks with a ranker file and ``worker.ranker_reload_s`` > 0."""
    rank, every_s = ctx.settings.ranking, ctx.settings.worker.ranker_reload_s
    if rank.fusion != "learned" or not rank.ranker_path or every_s <= 0:
        return None
    log.info("watching the ranker file %s for refits every %.0f s", rank.ranker_path, every_s)
    return asyncio.ensure_future(watch_ranker(ctx, RankerFile(os.path.expanduser(rank.ranker_path)), every_s))
