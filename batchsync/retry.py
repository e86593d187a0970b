"""When to retry an acquireAccessToken call, and how long to wait first.

The decisions are small pure functions (:func:`parse_retry_after`, :func:`should_retry`,
:func:`backoff_seconds`) so they can be tested with constructed inputs; :class:`RetryPolicy` puts
them into one tenacity ``AsyncRetrying`` per target, with an injectable ``sleep``.

Retrying a POST is normally unsafe. acquireAccessToken is an exception: calling it again with the
same credentials has the same effect as calling it once, so batchsync retries it even when the
connection dropped after the request was sent (a timeout, a reset, a closed keep-alive socket),
which aiohttp itself never does for a POST.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, stop_before_delay
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from batchsync.errors import GraphRequestError, GraphResponseError

__all__ = [
    "RetryPolicy",
    "TargetProgress",
    "backoff_seconds",
    "parse_retry_after",
    "should_retry",
]

# Statuses retried up to the attempt limit: throttling and transient gateway failures.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Statuses retried only a few times. A 500 can be deterministic, because Graph returns 500
# InternalError for an unknown secret key. A 409 is a directory conflict that clears on its own.
LIMITED_RETRIES = {500: 2, 409: 3}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header requests, in seconds, or None if unusable.

    Accepts integer and decimal seconds (``2``, ``2.542``), two comma-joined numbers (``30,120``,
    the first counts), and an HTTP-date (relative to ``now``). Zero and negative values mean no
    wait. Anything else returns None, so the caller falls back to exponential backoff.
    """
    if value is None:
        return None
    text = value.strip().split(",")[0].strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(value.strip(), now)
    if not math.isfinite(seconds):
        return None

    return max(0.0, seconds)


def _seconds_until_http_date(value: str, now: datetime | None) -> float | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)

    return max(0.0, (moment - reference).total_seconds())


def should_retry(error: BaseException, previous_statuses: list[int | None]) -> bool:
    """Return whether a failed attempt is worth another try.

    ``previous_statuses`` are the HTTP statuses of this target's attempts so far, the failed one
    included (None for an attempt that got no response).
    """
    if isinstance(error, GraphRequestError):
        return True
    if not isinstance(error, GraphResponseError):
        return False
    if error.status in TRANSIENT_STATUSES:
        return True
    limit = LIMITED_RETRIES.get(error.status)
    if limit is None:
        return False

    return previous_statuses.count(error.status) <= limit


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Return a full-jitter exponential backoff: uniform in ``[0, min(cap, base * 2**(attempt-1))]``."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))

    return rng.uniform(0, ceiling)


@dataclass(slots=True)
class TargetProgress:
    """The record of one target so far: attempts, statuses, throttling and the last ids."""

    attempts: int = 0
    throttled: int = 0
    statuses: list[int | None] = field(default_factory=list)
    request_id: str | None = None
    client_request_id: str | None = None

    def record(self, status: int | None, request_id: str | None, client_request_id: str) -> None:
        """Record one HTTP request of this target."""
        self.attempts += 1
        self.statuses.append(status)
        self.request_id = request_id
        self.client_request_id = client_request_id
        if status == 429:
            self.throttled += 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The retry rules of a run, turned into one tenacity controller per target."""

    max_attempts: int
    max_target_seconds: float
    max_retry_after_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    sleep: Callable[[float], Awaitable[None]] | None = None
    on_retry: Callable[[RetryCallState, float], None] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def controller(self, progress: TargetProgress) -> AsyncRetrying:
        """Return the tenacity controller for one target; ``progress`` feeds its decisions."""
        options: dict[str, Any] = {}
        if self.sleep is not None:
            options["sleep"] = self.sleep
        return AsyncRetrying(
            stop=(
                stop_after_attempt(self.max_attempts)
                | stop_before_delay(self.max_target_seconds)
                | _StopOnLongRetryAfter(self.max_retry_after_seconds)
            ),
            wait=_WaitRetryAfterOrBackoff(self),
            retry=_RetryIfWorthIt(progress),
            before_sleep=self._before_sleep,
            reraise=True,
            **options,
        )

    def _before_sleep(self, state: RetryCallState) -> None:
        if self.on_retry is not None:
            self.on_retry(state, state.upcoming_sleep)


def _retry_after_of(state: RetryCallState) -> float | None:
    if state.outcome is None or not state.outcome.failed:
        return None
    error = state.outcome.exception()
    if isinstance(error, GraphResponseError):
        return error.retry_after

    return None


class _RetryIfWorthIt(retry_base):
    def __init__(self, progress: TargetProgress) -> None:
        self._progress = progress

    def __call__(self, retry_state: RetryCallState) -> bool:
        if retry_state.outcome is None or not retry_state.outcome.failed:
            return False
        error = retry_state.outcome.exception()
        return error is not None and should_retry(error, self._progress.statuses)


class _WaitRetryAfterOrBackoff(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        retry_after = _retry_after_of(retry_state)
        if retry_after is not None:
            return retry_after
        return backoff_seconds(
            retry_state.attempt_number,
            base=self._policy.backoff_base_seconds,
            cap=self._policy.backoff_max_seconds,
            rng=self._policy.rng,
        )


class _StopOnLongRetryAfter(stop_base):
    """Give up instead of sleeping for a ``Retry-After`` longer than the configured maximum."""

    def __init__(self, maximum: float) -> None:
        self._maximum = maximum

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = _retry_after_of(retry_state)
        return retry_after is not None and retry_after > self._maximum
