"""Throttling as Graph's identity service and the Entra token endpoint apply it.

Graph meters each (app, tenant) pair with two token buckets: resource units (RU) and writes.
Every acquireAccessToken call costs 1 RU and 1 write. A request over either limit gets a 429,
and it is still charged. That is why a client retrying without waiting stays throttled: the
buckets may go negative, down to minus their capacity. The token endpoint has a simpler limit
of N requests per client id per minute.

Published limits per app and tenant, in resource units per 10 seconds, are 3,500 for tenants
under 50 users, 5,000 for up to 500 users and 8,000 above that. Writes are limited to 3,000 per
150 seconds. Source: Microsoft Graph "throttling limits" page, identity and access section.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from batchsync.emulator.scenario import Bucket, RetryAfterShape, ThrottlingSettings

__all__ = [
    "TENANT_SIZE_BUCKETS",
    "GraphThrottle",
    "ThrottleDecision",
    "TokenBucket",
    "TokenRequestLimiter",
    "format_retry_after",
    "format_usage",
]

TENANT_SIZE_BUCKETS = {
    "small": Bucket(burst=3500, rate=350),
    "medium": Bucket(burst=5000, rate=500),
    "large": Bucket(burst=8000, rate=800),
}

# Graph sends x-ms-throttle-limit-percentage only once usage of a limit passes 80%.
USAGE_REPORT_THRESHOLD = 0.8

Clock = Callable[[], float]
Limit = Literal["ResourceUnit", "Write"]


@dataclass(slots=True)
class TokenBucket:
    """Bucket of ``capacity`` tokens refilled continuously at ``rate`` tokens per second."""

    capacity: float
    rate: float
    level: float
    updated: float

    @classmethod
    def full(cls, bucket: Bucket, scale: float, now: float) -> TokenBucket:
        """Create a full bucket with ``bucket``'s capacity and rate, both multiplied by ``scale``."""
        capacity = bucket.burst * scale

        return cls(capacity=capacity, rate=bucket.rate * scale, level=capacity, updated=now)

    def take(self, cost: float, now: float) -> bool:
        """Charge ``cost`` and return whether the bucket held enough before the charge.

        The charge applies either way, down to a floor of minus the capacity.
        """
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        allowed = self.level >= cost
        self.level = max(self.level - cost, -self.capacity)

        return allowed

    def seconds_until(self, amount: float) -> float:
        """Return how long until the bucket contains ``amount`` tokens again."""
        return max(0.0, (amount - self.level) / self.rate)

    @property
    def usage(self) -> float:
        """Fraction of the capacity in use: 0 when full, above 1 when overdrawn."""
        return (self.capacity - self.level) / self.capacity


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """Outcome of charging one request: ``exceeded`` is None when the request may proceed."""

    exceeded: Limit | None
    wait_seconds: float
    usage: float


@dataclass(slots=True)
class _PairBuckets:
    resource_units: TokenBucket
    writes: TokenBucket


class GraphThrottle:
    """Resource-unit and write buckets for every (app id, tenant id) pair seen."""

    def __init__(self, settings: ThrottlingSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._resource_units = settings.resource_units or TENANT_SIZE_BUCKETS[settings.tenant_size]
        self._pairs: dict[tuple[str, str], _PairBuckets] = {}

    @property
    def retry_after_shape(self) -> RetryAfterShape:
        """Shape of the Retry-After header on throttled responses."""
        return self._settings.retry_after

    def charge(self, app_id: str, tenant_id: str) -> ThrottleDecision:
        """Charge one write request to the pair and decide whether it is throttled."""
        now = self._clock()
        buckets = self._buckets_for(app_id, tenant_id, now)
        resource_units_allowed = buckets.resource_units.take(1, now)
        writes_allowed = buckets.writes.take(1, now)
        usage = max(buckets.resource_units.usage, buckets.writes.usage)
        if resource_units_allowed and writes_allowed:
            return ThrottleDecision(exceeded=None, wait_seconds=0.0, usage=usage)

        resource_unit_wait = buckets.resource_units.seconds_until(1)
        write_wait = buckets.writes.seconds_until(1)
        # Report the limit that keeps the caller waiting longest, since Retry-After covers both.
        exceeded: Limit = "Write" if write_wait >= resource_unit_wait else "ResourceUnit"

        return ThrottleDecision(
            exceeded=exceeded, wait_seconds=max(resource_unit_wait, write_wait), usage=usage
        )

    def _buckets_for(self, app_id: str, tenant_id: str, now: float) -> _PairBuckets:
        key = (app_id, tenant_id)
        buckets = self._pairs.get(key)
        if buckets is None:
            scale = self._settings.scale
            buckets = _PairBuckets(
                resource_units=TokenBucket.full(self._resource_units, scale, now),
                writes=TokenBucket.full(self._settings.writes, scale, now),
            )
            self._pairs[key] = buckets

        return buckets


def throttle_headers(decision: ThrottleDecision, app_id: str, tenant_id: str) -> dict[str, str]:
    """Build the ``x-ms-throttle-scope`` and ``x-ms-throttle-information`` headers of a 429."""
    if decision.exceeded == "Write":
        scope, information = "Write", "WriteLimitExceeded"
    else:
        scope, information = "ReadWrite", "ResourceUnitLimitExceeded"

    return {
        "x-ms-throttle-scope": f"Tenant_Application/{scope}/{app_id}/{tenant_id}",
        "x-ms-throttle-information": information,
    }


def format_usage(usage: float) -> str | None:
    """Format usage for ``x-ms-throttle-limit-percentage``, or None at or below 80%."""
    if usage <= USAGE_REPORT_THRESHOLD:
        return None

    return f"{usage:.2f}"


def format_retry_after(
    shape: RetryAfterShape, wait_seconds: float, now: Clock = time.time
) -> str | None:
    """Render a wait as a Retry-After value of the given shape; None means no header.

    The odd shapes are values real services have sent or that RFC 9110 allows, so clients can
    be tested against each: ``huge``, ``zero``, ``negative`` and ``garbage`` ignore the wait.
    """
    whole_seconds = max(1, math.ceil(wait_seconds))
    if shape == "integer":
        return str(whole_seconds)
    if shape == "decimal":
        return f"{max(wait_seconds, 0.001):.3f}"
    if shape == "pair":
        return f"{whole_seconds},120"
    if shape == "http_date":
        # HTTP-date has whole-second resolution, so round up to keep the date in the future.
        return formatdate(math.ceil(now()) + whole_seconds, usegmt=True)

    return _FIXED_RETRY_AFTER[shape]


_FIXED_RETRY_AFTER: dict[str, str | None] = {
    "absent": None,
    "huge": "86400",
    "zero": "0",
    "negative": "-5",
    "garbage": "soon",
}


class TokenRequestLimiter:
    """Sliding one-minute window of token requests per client id."""

    def __init__(self, max_per_minute: int, clock: Clock = time.monotonic) -> None:
        self._max_per_minute = max_per_minute
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}

    def allow(self, client_id: str) -> bool:
        """Return whether another request from ``client_id`` fits in the window, and count it.

        Rejected requests are not counted, so the client gets through again one minute after
        its earliest accepted request.
        """
        if self._max_per_minute == 0:
            return True

        now = self._clock()
        recent = self._recent.setdefault(client_id, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self._max_per_minute:
            return False

        recent.append(now)

        return True
