"""Latency and errors of the worker's calls to Triton and Milvus, and the circuit-breaker gauge.

The clients (``encoders/client.py``, ``streams/vectors/collections.py``) do not
import this package: they call an ``observe(label, seconds, failed)`` hook when
one is set, and :func:`streams.web.instrument.instrument_worker` sets it. That
keeps the encoders usable without the worker's web server, and keeps an import
cycle out (``streams.web`` imports the read API, which imports the services that
create the clients).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

from streams.web.metrics import (BREAKER_STATE, MILVUS_ERRORS, MILVUS_SECONDS, TRITON_ERRORS, TRITON_SECONDS,
                                 breaker_code)

Observer = Callable[[str, float, bool], None]


class CallMetrics:
    """``observe(label, seconds, failed)``: one histogram sample per call, one counter step per failure.

    Called from the event loop (Triton) and from worker threads (Milvus calls run in
    ``asyncio.to_thread``); prometheus-client's metrics are thread-safe, and the
    child cache is a dict whose reads and writes the GIL keeps whole.
    """

    __slots__ = ("_seconds", "_errors", "_children")

    def __init__(self, seconds: Histogram, errors: Counter) -> None:
        self._seconds, self._errors = seconds, errors
        self._children: dict[str, tuple[Histogram, Counter]] = {}

    def __call__(self, label: str, seconds: float, failed: bool) -> None:
        pair = self._children.get(label)
        if pair is None:
            # Both series appear with the first call, the errors at 0: an error rate needs a 0 to start from.
            pair = self._children[label] = (self._seconds.labels(label), self._errors.labels(label))
        pair[0].observe(seconds)
        if failed:
            pair[1].inc()


triton_calls = CallMetrics(TRITON_SECONDS, TRITON_ERRORS)
milvus_calls = CallMetrics(MILVUS_SECONDS, MILVUS_ERRORS)


def watch_breaker(service: str, breaker) -> None:
    """Export ``breaker``'s state as ``avrec_circuit_breaker_state{service=...}``.

    The value is read from the breaker when the registry is collected (a scrape, or
    ``get_sample_value``), not pushed on each change: an open circuit turns half-open by
    the clock alone (``CircuitBreaker.state``), with no call to announce it.
    """
    BREAKER_STATE.labels(service=service).set_function(lambda: breaker_code(breaker.state))
