"""Offer records at a fixed rate, shared by the benchmarks that drive the worker through Kafka."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def paced(records: Iterable[T], rate: float) -> Iterator[T]:
    """Yield record k at ``k / rate`` seconds after the first (as fast as possible when rate <= 0).

    The schedule is absolute, so a slow send is caught up by the next ones rather
    than shifting every later record; sleeps are short so the jitter stays ~2 ms.
    """
    t0 = time.perf_counter()
    for k, rec in enumerate(records):
        if rate > 0:
            due = t0 + k / rate
            while (d := due - time.perf_counter()) > 0:
                time.sleep(min(d, 0.002))
        yield rec
