"""Tests of Graph identity throttling and token endpoint throttling in the emulator."""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from batchsync.emulator.scenario import Bucket, ThrottlingSettings
from batchsync.emulator.throttling import (
    GraphThrottle,
    TokenBucket,
    TokenRequestLimiter,
    format_retry_after,
    format_usage,
)
from tests import emulator_helpers
from tests.emulator_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT_ID,
    GraphClient,
    StartEmulator,
    acquire_token,
    graph_client,
    object_id,
)

# pytest looks for fixtures in the test module's namespace.
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator

OTHER_CLIENT_ID = "6a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"


class FakeClock:
    """A clock that a test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestTokenBucket:
    """The bucket arithmetic, checked without sleeping."""

    def test_allows_up_to_capacity(self) -> None:
        """A full bucket of 3 allows 3 requests, then rejects."""
        bucket = TokenBucket.full(Bucket(burst=3, rate=1), scale=1, now=0)

        assert [bucket.take(1, now=0) for _ in range(4)] == [True, True, True, False]

    def test_refills_over_time(self) -> None:
        """An empty bucket refills at its rate."""
        bucket = TokenBucket.full(Bucket(burst=2, rate=4), scale=1, now=0)
        bucket.take(1, now=0)
        bucket.take(1, now=0)

        assert bucket.take(1, now=0.1) is False
        assert bucket.take(1, now=0.6) is True

    def test_rejected_requests_still_charged(self) -> None:
        """A throttled request drives the level below zero, delaying recovery."""
        bucket = TokenBucket.full(Bucket(burst=2, rate=1), scale=1, now=0)
        for _ in range(5):
            bucket.take(1, now=0)

        assert bucket.level == -2
        assert bucket.seconds_until(1) == 3

    def test_floor_at_minus_capacity(self) -> None:
        """The level never drops below minus the capacity."""
        bucket = TokenBucket.full(Bucket(burst=2, rate=1), scale=1, now=0)
        for _ in range(50):
            bucket.take(1, now=0)

        assert bucket.level == -2
        assert bucket.usage == 2.0

    def test_never_above_capacity(self) -> None:
        """A long idle time refills only to the capacity."""
        bucket = TokenBucket.full(Bucket(burst=2, rate=1), scale=1, now=0)
        bucket.take(1, now=1000)

        assert bucket.level == 1

    def test_scale(self) -> None:
        """scale multiplies both capacity and rate."""
        bucket = TokenBucket.full(Bucket(burst=3000, rate=20), scale=0.01, now=0)

        assert bucket.capacity == 30
        assert bucket.rate == pytest.approx(0.2)


class TestGraphThrottle:
    """Per (app, tenant) resource-unit and write buckets."""

    def throttle(self, clock: FakeClock, **settings: Any) -> GraphThrottle:
        """Build a throttle on ``clock`` with the given settings."""
        return GraphThrottle(ThrottlingSettings.model_validate(settings), clock)

    def test_write_limit(self) -> None:
        """The write bucket throttles first with Graph's write quota."""
        throttle = self.throttle(FakeClock(), writes={"burst": 2, "rate": 1})
        decisions = [throttle.charge("app", "tenant") for _ in range(3)]

        assert [decision.exceeded for decision in decisions] == [None, None, "Write"]
        assert decisions[2].wait_seconds == pytest.approx(2.0)

    def test_resource_unit_limit(self) -> None:
        """A resource-unit bucket smaller than the write bucket throttles first."""
        throttle = self.throttle(
            FakeClock(), resource_units={"burst": 1, "rate": 1}, writes={"burst": 10, "rate": 1}
        )
        decisions = [throttle.charge("app", "tenant") for _ in range(2)]

        assert decisions[1].exceeded == "ResourceUnit"

    def test_tenant_sizes(self) -> None:
        """The tenant size picks 3,500, 5,000 or 8,000 resource units per 10 seconds."""
        for size, burst in (("small", 3500), ("medium", 5000), ("large", 8000)):
            throttle = self.throttle(
                FakeClock(), tenant_size=size, writes={"burst": 1e6, "rate": 1}
            )
            allowed = sum(throttle.charge("a", "t").exceeded is None for _ in range(burst + 1))

            assert allowed == burst

    def test_pairs_are_separate(self) -> None:
        """Each (app, tenant) pair has its own buckets."""
        throttle = self.throttle(FakeClock(), writes={"burst": 1, "rate": 1})
        throttle.charge("app", "tenant")

        assert throttle.charge("app", "tenant").exceeded == "Write"
        assert throttle.charge("other-app", "tenant").exceeded is None
        assert throttle.charge("app", "other-tenant").exceeded is None

    def test_usage_reported(self) -> None:
        """Usage is the larger of the two buckets' fractions in use."""
        throttle = self.throttle(FakeClock(), writes={"burst": 10, "rate": 1})
        usages = [throttle.charge("app", "tenant").usage for _ in range(9)]

        assert usages[-1] == pytest.approx(0.9)
        assert format_usage(usages[7]) is None
        assert format_usage(usages[8]) == "0.90"


class TestRetryAfterFormat:
    """Each configurable Retry-After shape."""

    @pytest.mark.parametrize(
        ("shape", "wait", "expected"),
        [
            ("integer", 2.2, "3"),
            ("integer", 0.01, "1"),
            ("decimal", 2.25, "2.250"),
            ("decimal", 0.0001, "0.001"),
            ("pair", 4.5, "5,120"),
            ("absent", 3, None),
            ("huge", 3, "86400"),
            ("zero", 3, "0"),
            ("negative", 3, "-5"),
            ("garbage", 3, "soon"),
        ],
    )
    def test_shapes(self, shape: Any, wait: float, expected: str | None) -> None:
        """The shape decides the header text for a given wait."""
        assert format_retry_after(shape, wait) == expected

    def test_http_date(self) -> None:
        """http_date is an IMF-fixdate the wait, rounded up, in the future."""
        value = format_retry_after("http_date", 2.5, now=lambda: 1_700_000_000.2)

        assert value is not None
        assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", value)
        assert parsedate_to_datetime(value).timestamp() == 1_700_000_001 + 3


class TestTokenRequestLimiter:
    """The token endpoint's per-client limit per minute."""

    def test_limit_per_minute(self) -> None:
        """The limit applies per client and clears after a minute."""
        clock = FakeClock()
        limiter = TokenRequestLimiter(2, clock)

        assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
        assert limiter.allow("b") is True
        clock.now += 60
        assert limiter.allow("a") is True

    def test_zero_means_off(self) -> None:
        """A limit of 0 never throttles."""
        limiter = TokenRequestLimiter(0)

        assert all(limiter.allow("a") for _ in range(1000))


async def throttled_client(
    new_emulator: StartEmulator, http: aiohttp.ClientSession, **throttling: Any
) -> GraphClient:
    """Start an emulator with ``throttling`` settings and return a Graph client for it."""
    emulator = await new_emulator(throttling=throttling)

    return await graph_client(emulator, http)


class TestGraphThrottling:
    """429 responses and throttle headers from the running emulator."""

    async def test_write_limit_response(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Past the write burst, Graph sends 429 TooManyRequests with its throttle headers."""
        client = await throttled_client(new_emulator, http, writes={"burst": 3, "rate": 0.5})
        responses = [await client.acquire(object_id(n)) for n in range(4)]
        throttled = responses[3]

        assert [response.status for response in responses] == [204, 204, 204, 429]
        assert throttled.error["code"] == "TooManyRequests"
        assert throttled.error["message"] == "Too many requests."
        assert throttled.error["innerError"]["request-id"] == throttled.headers["request-id"]
        # The 4th request leaves the bucket at -1, and 2 tokens at 0.5 per second take 4 s.
        assert throttled.headers["Retry-After"] == "4"
        assert throttled.headers["x-ms-throttle-scope"] == (
            f"Tenant_Application/Write/{CLIENT_ID}/{TENANT_ID}"
        )
        assert throttled.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
        assert client.emulator.stats.throttled == 1

    async def test_resource_unit_response(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Past the resource-unit burst, the scope is ReadWrite."""
        client = await throttled_client(
            new_emulator, http, resource_units={"burst": 1, "rate": 0.1}
        )
        await client.acquire()
        throttled = await client.acquire()

        assert throttled.status == 429
        assert throttled.headers["x-ms-throttle-scope"] == (
            f"Tenant_Application/ReadWrite/{CLIENT_ID}/{TENANT_ID}"
        )
        assert throttled.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
        assert throttled.headers["Retry-After"] == "20"

    async def test_limit_percentage_header(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """x-ms-throttle-limit-percentage appears once usage passes 80%."""
        client = await throttled_client(new_emulator, http, writes={"burst": 10, "rate": 0.01})
        responses = [await client.acquire(object_id(n)) for n in range(10)]
        percentages = [
            response.headers.get("x-ms-throttle-limit-percentage") for response in responses
        ]

        assert percentages[:8] == [None] * 8
        assert percentages[8] == "0.90"
        assert percentages[9] == "1.00"
        assert client.emulator.calls[-1].throttle_percentage == "1.00"
        assert responses[0].headers["x-ms-resource-unit"] == "1"

    async def test_retries_keep_counting(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Throttled retries are charged, so the suggested wait grows."""
        client = await throttled_client(new_emulator, http, writes={"burst": 2, "rate": 1})
        responses = [await client.acquire() for _ in range(5)]
        waits = [int(response.headers["Retry-After"]) for response in responses[2:]]

        assert waits == sorted(waits)
        assert waits[-1] > waits[0]

    async def test_recovers_after_retry_after(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Waiting the decimal Retry-After is enough for the next request to pass."""
        client = await throttled_client(
            new_emulator, http, writes={"burst": 2, "rate": 10}, retry_after="decimal"
        )
        await client.acquire()
        await client.acquire()
        throttled = await client.acquire()
        await asyncio.sleep(float(throttled.headers["Retry-After"]))

        assert throttled.status == 429
        assert (await client.acquire()).status == 204

    async def test_scale_shrinks_limits(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """scale 0.001 turns the 3,000-write burst into 3."""
        client = await throttled_client(new_emulator, http, scale=0.001)
        statuses = [(await client.acquire(object_id(n))).status for n in range(4)]

        assert statuses == [204, 204, 204, 429]

    async def test_throttle_before_permission(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A throttled token without roles gets 429, as throttling comes before permissions."""
        client = await throttled_client(new_emulator, http, writes={"burst": 1, "rate": 0.1})
        token = client.emulator.mint_token(roles=[])
        first = await client.acquire(token=token)
        second = await client.acquire(token=token)

        assert first.status == 401
        assert second.status == 429

    async def test_unauthenticated_not_charged(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Requests rejected for their token do not use up the bucket."""
        client = await throttled_client(new_emulator, http, writes={"burst": 1, "rate": 0.1})
        for _ in range(3):
            await client.acquire(token="")

        assert (await client.acquire()).status == 204

    async def test_apps_throttled_separately(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A second app in the same tenant has its own buckets."""
        apps = [
            {"client_id": client_id, "tenant": TENANT_ID, "secrets": [CLIENT_SECRET],
             "permissions": ["Synchronization.ReadWrite.All"]}
            for client_id in (CLIENT_ID, OTHER_CLIENT_ID)
        ]  # fmt: skip
        emulator = await new_emulator(apps=apps, throttling={"writes": {"burst": 1, "rate": 0.1}})
        first = await graph_client(emulator, http)
        other_token = (await acquire_token(emulator, client_id=OTHER_CLIENT_ID))["access_token"]
        second = GraphClient(emulator, http, other_token)

        assert (await first.acquire()).status == 204
        assert (await first.acquire()).status == 429
        assert (await second.acquire()).status == 204

    @pytest.mark.parametrize(
        ("shape", "pattern"),
        [
            ("integer", r"\d+"),
            ("decimal", r"\d+\.\d{3}"),
            ("pair", r"\d+,120"),
            ("http_date", r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"),
            ("huge", "86400"),
            ("zero", "0"),
            ("negative", "-5"),
            ("garbage", "soon"),
        ],
    )
    async def test_retry_after_shapes(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession, shape: str, pattern: str
    ) -> None:
        """Each Retry-After shape reaches the client as configured."""
        client = await throttled_client(
            new_emulator, http, writes={"burst": 1, "rate": 0.25}, retry_after=shape
        )
        await client.acquire()
        throttled = await client.acquire()

        assert throttled.status == 429
        assert re.fullmatch(pattern, throttled.headers["Retry-After"])

    async def test_retry_after_absent(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """The absent shape sends a 429 without Retry-After."""
        client = await throttled_client(
            new_emulator, http, writes={"burst": 1, "rate": 0.25}, retry_after="absent"
        )
        await client.acquire()
        throttled = await client.acquire()

        assert throttled.status == 429
        assert "Retry-After" not in throttled.headers

    async def test_integer_is_ceiling(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """The integer shape rounds the wait up: 2 tokens short at 0.3 per second is 6.7 s."""
        client = await throttled_client(new_emulator, http, writes={"burst": 1, "rate": 0.3})
        await client.acquire()
        throttled = await client.acquire()

        assert throttled.headers["Retry-After"] == "7"


class TestTokenThrottling:
    """The token endpoint's plain-text 429."""

    async def test_plain_text_429(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Past max_per_minute, the token endpoint sends 429 Too Many Requests in plain text."""
        emulator = await new_emulator(tokens={"throttle": {"max_per_minute": 2}})
        client = GraphClient(emulator, http, "")
        form = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": f"{emulator.graph_url}/.default",
        }
        path = f"/{TENANT_ID}/oauth2/v2.0/token"
        responses = [await client.post_form(path, form) for _ in range(3)]

        assert [response.status for response in responses] == [200, 200, 429]
        assert responses[2].body == b"Too Many Requests"
        assert responses[2].headers["Retry-After"] == "60"
        assert responses[2].headers["Content-Type"].startswith("text/plain")
        assert emulator.stats.throttled == 1

    async def test_msal_on_plain_text_429(self, new_emulator: StartEmulator) -> None:
        """MSAL 1.39 cannot parse the plain-text 429 and raises instead of returning an error."""
        emulator = await new_emulator(tokens={"throttle": {"max_per_minute": 1}})
        await acquire_token(emulator)
        started = time.monotonic()

        with pytest.raises(ValueError, match="Expecting value"):
            await acquire_token(emulator)

        assert time.monotonic() - started < 5
