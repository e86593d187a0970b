"""Retry decisions as pure functions, and the tenacity controller with an injected sleep."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from batchsync.errors import (
    GraphRequestError,
    GraphResponseError,
    GraphTimeoutError,
    ThrottledError,
)
from batchsync.retry import (
    RetryPolicy,
    TargetProgress,
    backoff_seconds,
    parse_retry_after,
    should_retry,
)

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


class TestParseRetryAfter:
    """Every Retry-After shape Graph and RFC 9110 produce, and garbage."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2", 2.0),
            ("0", 0.0),
            ("2.542", 2.542),
            ("0.249", 0.249),
            ("30,120", 30.0),
            ("0,120", 0.0),
            (" 7 ", 7.0),
            ("-5", 0.0),
            ("86400", 86400.0),
        ],
    )
    def test_numeric_shapes(self, value, expected):
        """Integer, decimal, comma pair and negative values parse to seconds."""
        assert parse_retry_after(value, now=NOW) == expected

    @pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "1e999", ",", "Tue, 99 Foo"])
    def test_unusable_values(self, value):
        """Missing or garbage values give None so the caller backs off exponentially."""
        assert parse_retry_after(value, now=NOW) is None

    def test_http_date_in_future(self):
        """An HTTP-date is converted to the seconds between now and then."""
        value = format_datetime(NOW + timedelta(seconds=42), usegmt=True)

        assert parse_retry_after(value, now=NOW) == 42.0

    def test_http_date_in_past(self):
        """An HTTP-date already past means no wait."""
        value = format_datetime(NOW - timedelta(seconds=42), usegmt=True)

        assert parse_retry_after(value, now=NOW) == 0.0


def response_error(
    status: int, code: str = "x", retry_after: float | None = None
) -> GraphResponseError:
    """Return a GraphResponseError (ThrottledError for 429) with ``status``."""
    cls = ThrottledError if status == 429 else GraphResponseError
    return cls(status, code, "", retry_after=retry_after)


class TestShouldRetry:
    """Which failures are worth another attempt."""

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    def test_transient_statuses_retry(self, status):
        """Throttling and gateway failures are retried however often they occurred."""
        assert should_retry(response_error(status), [status] * 5)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 415, 422])
    def test_client_errors_never_retry(self, status):
        """Client errors are final on the first occurrence."""
        assert not should_retry(response_error(status), [status])

    def test_500_retried_at_most_twice(self):
        """A 500 gets two retries, then the third 500 is final."""
        assert should_retry(response_error(500), [500])
        assert should_retry(response_error(500), [500, 500])
        assert not should_retry(response_error(500), [500, 500, 500])

    def test_409_retried_three_times(self):
        """A directory conflict gets three retries."""
        assert should_retry(response_error(409), [409, 409, 409])
        assert not should_retry(response_error(409), [409, 409, 409, 409])

    def test_connection_errors_and_timeouts_retry(self):
        """A request that got no answer is safe to repeat."""
        assert should_retry(GraphRequestError("reset"), [None])
        assert should_retry(GraphTimeoutError("slow"), [None])

    def test_other_exceptions_do_not_retry(self):
        """A bug is not retried."""
        assert not should_retry(ValueError("bug"), [])


class TestBackoff:
    """Full-jitter exponential backoff."""

    def test_bounds_grow_and_cap(self):
        """Each wait lies in [0, min(cap, base * 2**(attempt-1))]."""
        rng = random.Random(3)
        for attempt in range(1, 12):
            ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
            for _ in range(50):
                assert 0 <= backoff_seconds(attempt, base=0.5, cap=8.0, rng=rng) <= ceiling


class Sleeps:
    """An injected sleep that records what it was asked to wait and waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def policy(sleeps: Sleeps, **overrides: float) -> RetryPolicy:
    """Return a RetryPolicy with small limits and the injected sleep."""
    values = {"max_attempts": 6, "max_target_seconds": 600.0, "max_retry_after_seconds": 300.0,
              "backoff_base_seconds": 1.0, "backoff_max_seconds": 30.0}  # fmt: skip
    values.update(overrides)
    return RetryPolicy(sleep=sleeps, rng=random.Random(1), **values)  # type: ignore[arg-type]


async def drive(
    retry_policy: RetryPolicy, errors: list[BaseException | None]
) -> tuple[int, BaseException | None]:
    """Run the controller over a scripted list of outcomes; return attempts and the final error."""
    progress = TargetProgress()
    outcomes = iter(errors)
    attempts = 0
    try:
        async for attempt in retry_policy.controller(progress):
            with attempt:
                attempts += 1
                error = next(outcomes)
                progress.statuses.append(getattr(error, "status", None) if error else 204)
                if error is not None:
                    raise error
    except (GraphResponseError, GraphRequestError) as exc:
        return attempts, exc

    return attempts, None


class TestController:
    """The tenacity controller built by RetryPolicy."""

    async def test_400_tried_once(self):
        """A 400 is tried exactly once and never sleeps."""
        sleeps = Sleeps()
        attempts, error = await drive(policy(sleeps), [response_error(400)])

        assert attempts == 1
        assert isinstance(error, GraphResponseError)
        assert sleeps.calls == []

    async def test_retry_after_is_the_wait(self):
        """After a 429 with Retry-After: 2 the injected sleep receives 2.0."""
        sleeps = Sleeps()
        attempts, error = await drive(policy(sleeps), [response_error(429, retry_after=2.0), None])

        assert attempts == 2
        assert error is None
        assert sleeps.calls == [2.0]

    async def test_backoff_without_retry_after(self):
        """A 503 without Retry-After waits a jittered exponential backoff."""
        sleeps = Sleeps()
        await drive(policy(sleeps), [response_error(503), response_error(503), None])

        assert len(sleeps.calls) == 2
        assert 0 <= sleeps.calls[0] <= 1.0
        assert 0 <= sleeps.calls[1] <= 2.0

    async def test_stops_after_max_attempts(self):
        """Six 503s in a row end with the sixth error."""
        sleeps = Sleeps()
        attempts, error = await drive(policy(sleeps), [response_error(503)] * 10)

        assert attempts == 6
        assert isinstance(error, GraphResponseError)
        assert error.status == 503

    async def test_long_retry_after_gives_up(self):
        """A Retry-After beyond the maximum ends the target instead of sleeping for it."""
        sleeps = Sleeps()
        attempts, error = await drive(
            policy(sleeps, max_retry_after_seconds=60), [response_error(429, retry_after=86400.0)]
        )

        assert attempts == 1
        assert isinstance(error, ThrottledError)
        assert sleeps.calls == []

    async def test_deadline_stops_before_sleeping_past_it(self):
        """No sleep starts that would end after max_target_seconds."""
        sleeps = Sleeps()
        attempts, _ = await drive(
            policy(sleeps, max_target_seconds=5), [response_error(429, retry_after=10.0)]
        )

        assert attempts == 1
        assert sleeps.calls == []
