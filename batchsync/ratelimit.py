"""One rate limit for the whole run, shared by every worker, that adapts to Graph's throttling.

Graph throttles per application and tenant, so the limit that matters is the run's, not a
worker's. :class:`RateLimiter` hands out request slots on a GCRA schedule (a token bucket without
a background refill task), counts every attempt (retries included), and pauses every worker, not
only the one that was told, when Graph sends ``Retry-After``.

It also adapts: the configured rate is a ceiling. Graph's ``x-ms-throttle-limit-percentage``
header (sent once usage passes 80% of a limit) lowers the rate before the first 429, a 429 lowers
it further, and calls answered without that header raise it again gradually. The steady state sits
just under the server's limit instead of oscillating across it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "RateStats"]

# Lowest rate the adaptation may reach, as a fraction of the configured one; keeps a run moving.
MIN_RATE_FRACTION = 1 / 200
# Usage above which the rate goes down, and by how much per adjustment at full usage.
PRESSURE_THRESHOLD = 0.9
PRESSURE_DECREASE = 0.15
# Decrease on a 429: the rate that caused it was too high by an unknown amount.
THROTTLED_DECREASE = 0.5
# Relative increase per adjustment while Graph shows no pressure.
RECOVERY_INCREASE = 0.02


@dataclass(slots=True)
class RateStats:
    """Counters of one run's limiter."""

    acquired: int = 0
    paused_seconds: float = 0.0
    pauses: int = 0


class RateLimiter:
    """A shared, pausable, adaptive request rate limit.

    ``rate`` is in requests per second, ``burst`` the number of requests that may go out at once
    after an idle period. ``clock`` and ``sleep`` are injectable so tests run without waiting.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_rate = rate
        self.rate = rate
        self.burst = max(1, burst)
        self.adaptive = adaptive
        self.stats = RateStats()
        self._clock = clock
        self._sleep = sleep
        self._theoretical_arrival = clock()
        self._paused_until = 0.0
        self._last_adjustment = clock()

    @property
    def paused_until(self) -> float:
        """Return the clock time before which no request may start."""
        return self._paused_until

    async def acquire(self) -> None:
        """Wait for a request slot: after any pause, and on the rate schedule."""
        while True:
            now = self._clock()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            delay = self._reserve(now)
            if delay > 0:
                await self._sleep(delay)
            if self._paused_until <= self._clock():
                self.stats.acquired += 1
                return

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds`` from now; a longer pause already set wins."""
        now = self._clock()
        until = now + max(0.0, seconds)
        if until <= self._paused_until:
            return
        self.stats.paused_seconds += until - max(now, self._paused_until)
        self.stats.pauses += 1
        self._paused_until = until
        # No burst after a pause: a burst right after Retry-After ends would be throttled again.
        tolerance = (self.burst - 1) / self.rate
        self._theoretical_arrival = max(self._theoretical_arrival, until + tolerance)

    def on_throttled(self) -> None:
        """Lower the rate after a 429."""
        if self.adaptive:
            self._set_rate(self.rate * (1 - THROTTLED_DECREASE))

    def on_response(self, limit_percentage: float | None) -> None:
        """Adapt to one answered call; ``limit_percentage`` is Graph's header as a fraction."""
        if not self.adaptive or not self._adjustment_due():
            return
        if limit_percentage is not None and limit_percentage >= PRESSURE_THRESHOLD:
            excess = min(1.0, (limit_percentage - PRESSURE_THRESHOLD) / (1 - PRESSURE_THRESHOLD))
            self._set_rate(self.rate * (1 - PRESSURE_DECREASE * max(excess, 0.2)))
        elif limit_percentage is None:
            self._set_rate(self.rate * (1 + RECOVERY_INCREASE))

    def _reserve(self, now: float) -> float:
        # GCRA: a request may start once the theoretical arrival time is within the burst
        # tolerance of now; each request then moves that time on by one interval.
        interval = 1 / self.rate
        tolerance = (self.burst - 1) * interval
        start = max(now, self._theoretical_arrival - tolerance)
        self._theoretical_arrival = max(self._theoretical_arrival, now) + interval
        delay = start - now

        # Float rounding leaves delays of 1e-13 s where the schedule means "now".
        return delay if delay > 1e-9 else 0.0

    def _adjustment_due(self) -> bool:
        # Adjust at most once per expected request interval, so the step size does not depend on
        # how many workers answer at once.
        now = self._clock()
        if now - self._last_adjustment < 1 / self.rate:
            return False
        self._last_adjustment = now

        return True

    def _set_rate(self, rate: float) -> None:
        self.rate = min(self.max_rate, max(self.max_rate * MIN_RATE_FRACTION, rate))
