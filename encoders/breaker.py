"""A small circuit breaker and the retry back-off schedule used by :mod:`encoders.client`.

Why a breaker: when Triton is down, every Faust agent call would otherwise spend
``timeout x retries`` before failing, and hundreds of concurrent calls would keep
hammering a server that is restarting. After ``failures`` consecutive failed
calls the circuit *opens* and calls fail at once with :class:`CircuitOpen`; after
``reset_s`` a single trial call is let through (*half-open*): its success closes
the circuit, its failure opens it again for another ``reset_s``.

The breaker is driven explicitly (:meth:`CircuitBreaker.before_call`, then one
of :meth:`~CircuitBreaker.record_success`, :meth:`~CircuitBreaker.record_failure`
or :meth:`~CircuitBreaker.record_abandoned`) so the caller decides which errors
mean "the server is unhealthy". It is meant for one asyncio event loop: there
is no ``await`` between reading and changing its state, so it needs no lock.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable

from encoders.exceptions import CircuitOpen

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``reset_s``."""

    def __init__(
        self,
        failures: int,
        reset_s: float,
        name: str = "triton",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be >= 1")
        if reset_s <= 0:
            raise ValueError("reset_s must be > 0")
        self.failures = failures
        self.reset_s = reset_s
        self.name = name
        self._clock = clock
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0  # when the current open period started (re-set by a failed trial)
        self._down_since = 0.0  # when the outage began, for the "back after X s" message
        self._trial_in_flight = False
        self._last_error: str = ""

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (open whose reset time has passed counts as half-open)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    @property
    def last_error(self) -> str:
        return self._last_error

    def retry_in(self) -> float:
        """Seconds until a trial call will be allowed (0 when calls are allowed now)."""
        if self._state != OPEN:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))

    # -- protocol ----------------------------------------------------------------------------

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpen`.

        In half-open only one trial is admitted; concurrent callers keep failing
        fast until the trial settles, so a recovering server sees one request,
        not a thundering herd.
        """
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            remaining = self.retry_in()
            if remaining > 0:
                raise CircuitOpen(
                    f"{self.name}: circuit open, failing fast for another {remaining:.1f} s "
                    f"(last error: {self._last_error})"
                )
            self._state = HALF_OPEN
        # HALF_OPEN
        if self._trial_in_flight:
            raise CircuitOpen(
                f"{self.name}: circuit half-open, a trial call is in flight "
                f"(last error: {self._last_error})"
            )
        self._trial_in_flight = True
        log.debug("%s: circuit half-open, letting one trial call through", self.name)

    def record_success(self) -> None:
        """The server answered: reset the failure count and close the circuit if it was not closed."""
        if self._state != CLOSED:
            down_for = self._clock() - self._down_since
            log.info("%s: circuit closed, Triton back after %.1f s", self.name, down_for)
        self._state = CLOSED
        self._consecutive = 0
        self._trial_in_flight = False

    def record_failure(self, error: BaseException | str) -> None:
        """The server could not serve the call (unreachable, unavailable, timed out)."""
        self._last_error = str(error)
        self._consecutive += 1
        now = self._clock()
        if self._state == HALF_OPEN:
            # The trial failed: stay down for another full period. Logged below WARNING
            # because the outage was already announced when the circuit first opened.
            self._state = OPEN
            self._opened_at = now
            self._trial_in_flight = False
            log.info(
                "%s: trial call failed (%s); circuit stays open for %.1f s",
                self.name, self._last_error, self.reset_s,
            )
        elif self._state == CLOSED and self._consecutive >= self.failures:
            self._state = OPEN
            self._opened_at = now
            self._down_since = now
            log.warning(
                "%s: Triton circuit OPEN after %d failures: %s; failing fast for %.1f s",
                self.name, self._consecutive, self._last_error, self.reset_s,
            )
        # Already OPEN: late failures of calls admitted before it opened change nothing,
        # and must not log again or push the reset time out.

    def record_abandoned(self) -> None:
        """The call ended without a verdict (cancelled): free the trial slot, change nothing else."""
        if self._state == HALF_OPEN:
            self._trial_in_flight = False


def backoff_delays(
    retries: int,
    base: float = 0.05,
    cap: float = 2.0,
    jitter: bool | random.Random = True,
) -> list[float]:
    """The sleeps between ``retries + 1`` attempts: exponential, capped, with full jitter.

    Attempt ``i`` (0-based) waits ``uniform(0, min(cap, base * 2**i))``. Full jitter
    spreads out the retries of many concurrent callers, so they do not all hit a
    recovering server in the same instant. ``jitter`` is ``True`` (module-level
    ``random``), a ``random.Random`` (deterministic, for tests) or ``False`` (the
    upper bounds themselves).
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    bounds = [min(cap, base * (2**i)) for i in range(retries)]
    if jitter is False:
        return bounds
    rng = jitter if isinstance(jitter, random.Random) else random
    return [rng.uniform(0.0, b) for b in bounds]
