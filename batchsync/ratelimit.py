"""One rate limit for the whole run, shared by every worker, that adapts to Graph's throttling.

Graph throttles per application and tenant, so the limit that matters is the run's, not a
worker's. :class:`RateLimiter` hands out request slots on a GCRA schedule (a token bucket without
a background refill task), counts every attempt (retries included), and pauses every worker, not
only the one that received it, when Graph sends ``Retry-After``.

It also adapts: the configured rate is a ceiling. Graph's ``x-ms-throttle-limit-percentage``
header (sent once usage passes 80% of a limit) lowers the rate while usage still rises, before the
first 429. A 429 halves it, and responses without the header raise it again, quickly far below
the rate that last caused pressure and slowly near it. The constants were tuned with
``benchmarks/simulate_throttling.py``; ``benchmarks/BENCHMARKS.md`` has the measured results.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchsync.log import get_logger

__all__ = ["RateLimiter", "RateStats"]

log = get_logger(__name__)

# Lowest rate the adaptation may reach, as a fraction of the configured one; keeps a run moving.
MIN_RATE_FRACTION = 1 / 200
# Growth per second without pressure: fast while far below the rate that last caused pressure,
# slow (a fraction of that rate per second) near it.
FAST_GROWTH_PER_SECOND = 1.0
SLOW_GROWTH_PER_SECOND = 0.1
FAST_GROWTH_LIMIT = 0.9
# Usage above which the rate is cut, and the cut. Cuts are at most one per reaction window, so
# the responses to requests sent before a cut do not cut again.
PRESSURE_USAGE = 0.85
PRESSURE_DECREASE = 0.2
# The first cut of a run: the rate that drained a full bucket is likely far above the limit.
FIRST_PRESSURE_DECREASE = 0.5
# Usage at which the first sign of pressure cuts the rate at once: the next calls may be throttled.
URGENT_USAGE = 0.98
REACTION_SECONDS = 0.3
# Usage above which the rate only holds, even while usage falls.
HOLD_USAGE = 0.95
# Decrease on a 429, applied once per cool-down however many workers see one.
THROTTLED_DECREASE = 0.5
THROTTLED_COOLDOWN_SECONDS = 1.0


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
        self._throttled_until = -math.inf
        self._cut_until = -math.inf
        self._pressure_rate = math.inf
        self._last_usage: float | None = None

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
        """Lower the rate after a 429; the 429s of requests already in flight count once."""
        now = self._clock()
        if not self.adaptive or now < self._throttled_until:
            return
        self._throttled_until = now + THROTTLED_COOLDOWN_SECONDS
        self._cut(now, THROTTLED_DECREASE, "throttled")
        # A 429 means the limit is somewhere below the old rate: grow back only slowly from here.
        self._pressure_rate = self.rate

    def on_response(self, limit_percentage: float | None) -> None:
        """Adapt to one response; ``limit_percentage`` is Graph's header as a fraction.

        Graph sends the header only above 80% usage. While usage rises above
        :data:`PRESSURE_USAGE` the rate is cut; while it falls the rate creeps up; without the
        header it grows back, quickly while well below the rate that last caused pressure and
        slowly near it, so that it spends its time just under the limit.
        """
        if not self.adaptive:
            return
        now = self._clock()
        elapsed = min(1.0, max(0.0, now - self._last_adjustment))
        self._last_adjustment = now
        if limit_percentage is not None:
            self._steer(limit_percentage, now, elapsed)
            return
        self._last_usage = None
        if self.rate < FAST_GROWTH_LIMIT * self._pressure_rate:
            self._set_rate(self.rate * (1 + FAST_GROWTH_PER_SECOND * elapsed))
        else:
            self._grow_slowly(elapsed)

    def _steer(self, usage: float, now: float, elapsed: float) -> None:
        previous, self._last_usage = self._last_usage, usage
        # Cut only while usage still rises, or when the first sign of pressure is already near
        # the limit. After a cut below the limit a large bucket needs a long time to refill, so
        # cutting again all that time would starve the run.
        rising = previous is not None and usage > previous
        urgent = previous is None and usage >= URGENT_USAGE
        if (urgent or (rising and usage >= PRESSURE_USAGE)) and now >= self._cut_until:
            first = self._pressure_rate == math.inf
            self._cut(now, FIRST_PRESSURE_DECREASE if first else PRESSURE_DECREASE, "usage")
        elif not rising and usage < HOLD_USAGE:
            # Usage is flat or falls, so the rate is at or below the limit. Creep up towards it.
            self._grow_slowly(elapsed)

    def _grow_slowly(self, elapsed: float) -> None:
        step = SLOW_GROWTH_PER_SECOND * min(self._pressure_rate, self.max_rate) * elapsed
        self._set_rate(self.rate + step)

    def _cut(self, now: float, fraction: float, reason: str) -> None:
        self._pressure_rate = self.rate
        self._cut_until = now + REACTION_SECONDS
        self._set_rate(self.rate * (1 - fraction))
        log.info(
            "ratelimit.decreased",
            reason=reason,
            rate=round(self.rate, 2),
            from_rate=round(self._pressure_rate, 2),
            usage=self._last_usage,
        )

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

    def _set_rate(self, rate: float) -> None:
        self.rate = min(self.max_rate, max(self.max_rate * MIN_RATE_FRACTION, rate))
