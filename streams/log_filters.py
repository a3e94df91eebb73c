"""Keep a broker outage from burying the worker's log under client retries.

While the broker is down aiokafka logs every reconnect attempt at ERROR: a
45-second restart in tests/reliability/test_outages.py wrote ~3,400 lines
("Unable connect to node", "Unable to update metadata", ...), hiding our own
circuit-breaker and retry lines. ``RepeatLimiter`` lets the first record of each
message template through, drops repeats for ``window_s``, and then lets one
through again with how many it dropped. Only the named third-party loggers are
limited: avrec's own records always pass.

Faust's producer buffer does the same under load: at saturation every batch
writes thousands of table changelog records, and each time its buffer passes
100 messages it logs "producer buffer full size N" at WARNING and "producer flush
took S" at INFO, about 2,300 pairs in a 70-second benchmark burst. Faust builds
those messages with the numbers already in them, so the template is the message
with its numbers masked.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

LIMITED_LOGGERS = ("aiokafka", "faust.transport.producer")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


class RepeatLimiter(logging.Filter):
    def __init__(self, window_s: float = 30.0, prefixes: tuple[str, ...] = LIMITED_LOGGERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = float(window_s)
        self.prefixes = prefixes
        self.clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (time let through, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        # The template: args (node ids, errnos) vary, and so do numbers formatted into the text.
        key = (record.name, record.levelno, _NUMBER.sub("#", str(record.msg)))
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        dropped = seen[1] if seen is not None else 0
        self._last[key] = (now, 0)
        if dropped:
            # Said once on the record itself, so every handler shows the same line.
            record.msg = f"{record.msg} [{dropped} more like this in the last {self.window_s:.0f} s]"
        return True


def limit_repeats(window_s: float = 30.0, prefixes: tuple[str, ...] = LIMITED_LOGGERS) -> RepeatLimiter:
    """Install one limiter on every existing logger under ``prefixes`` (idempotent); returns it.

    On each module logger (``aiokafka.conn``, ``aiokafka.cluster``, ...), not on the
    ``aiokafka`` parent: a logger's filters see only records logged to it, not its
    children's. Not on the handlers either: one record passes every handler, and
    the second would count as a repeat. Call it after the client is imported.
    """
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(prefixes)]
    for name in names:
        for f in logging.getLogger(name).filters:
            if isinstance(f, RepeatLimiter):
                return f
    limiter = RepeatLimiter(window_s, prefixes)
    for name in names:
        logging.getLogger(name).addFilter(limiter)
    return limiter
