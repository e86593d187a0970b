"""Tests of injected faults: status errors, storms, broken connections and malformed bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import pytest

from batchsync.emulator import Emulator
from batchsync.emulator.faults import FaultPlan
from batchsync.emulator.scenario import Scenario
from tests import emulator_helpers
from tests.emulator_helpers import (
    MISSING_ID,
    OBJECT_ID,
    GraphClient,
    StartEmulator,
    graph_client,
    object_id,
    scenario_data,
)

# pytest looks for fixtures in the test module's namespace.
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator


async def client_with_faults(
    new_emulator: StartEmulator, http: aiohttp.ClientSession, *faults: dict[str, Any], **extra: Any
) -> GraphClient:
    """Start an emulator with ``faults`` and return a Graph client holding an MSAL token."""
    emulator = await new_emulator(faults=list(faults), **extra)

    return await graph_client(emulator, http)


def faults_of(*faults: dict[str, Any]) -> list[Any]:
    """Validate fault definitions as a scenario would."""
    return list(Scenario.model_validate(scenario_data(faults=list(faults))).faults)


async def wait_for_records(emulator: Emulator, count: int) -> None:
    """Wait until ``count`` Graph calls are recorded, since slow handlers finish late."""
    for _ in range(200):
        if sum(call.endpoint == "graph" for call in emulator.calls) >= count:
            return
        await asyncio.sleep(0.02)


class TestFaultSelection:
    """Which requests a fault hits: calls, objects, rate and list order."""

    def test_calls_per_object(self) -> None:
        """calls counts requests separately for each object, from 1."""
        plan = FaultPlan(faults_of({"kind": "disconnect", "calls": [1, 3]}), seed=1)
        first = [plan.select(object_id(1)) is not None for _ in range(4)]
        second = [plan.select(object_id(2)) is not None for _ in range(2)]

        assert first == [True, False, True, False]
        assert second == [True, False]

    def test_objects_selector(self) -> None:
        """objects restricts a fault to the listed ids."""
        plan = FaultPlan(faults_of({"kind": "disconnect", "objects": [object_id(7)]}), seed=1)

        assert plan.select(object_id(7)) is not None
        assert plan.select(object_id(8)) is None

    def test_selectors_combine(self) -> None:
        """All selectors given must match."""
        fault = {"kind": "disconnect", "objects": [object_id(1)], "calls": [2]}
        plan = FaultPlan(faults_of(fault), seed=1)

        assert plan.select(object_id(1)) is None
        assert plan.select(object_id(1)) is not None
        assert plan.select(object_id(2)) is None
        assert plan.select(object_id(2)) is None

    def test_first_match_wins(self) -> None:
        """When several faults match, the first in the list applies."""
        faults = faults_of({"kind": "reset", "calls": [1]}, {"kind": "disconnect"})
        plan = FaultPlan(faults, seed=1)
        first = plan.select(object_id(1))
        second = plan.select(object_id(1))

        assert first is not None
        assert first.kind == "reset"
        assert second is not None
        assert second.kind == "disconnect"

    def test_rate_bounds(self) -> None:
        """Rate 0 never fires and rate 1 always fires."""
        never = FaultPlan(faults_of({"kind": "disconnect", "rate": 0}), seed=1)
        always = FaultPlan(faults_of({"kind": "disconnect", "rate": 1}), seed=1)

        assert all(never.select(object_id(n)) is None for n in range(100))
        assert all(always.select(object_id(n)) is not None for n in range(100))

    def test_rate_frequency(self) -> None:
        """Rate 0.3 fires on roughly 30% of 2,000 requests."""
        plan = FaultPlan(faults_of({"kind": "disconnect", "rate": 0.3}), seed=3)
        hits = sum(plan.select(object_id(n)) is not None for n in range(2000))

        assert 500 <= hits <= 700

    def test_rate_deterministic(self) -> None:
        """The same seed picks the same requests whatever the order of objects."""
        faults = faults_of({"kind": "disconnect", "rate": 0.5})
        forward = FaultPlan(faults, seed=9)
        backward = FaultPlan(faults, seed=9)
        picked_forward = {n for n in range(200) if forward.select(object_id(n)) is not None}
        picked_backward = {
            n for n in reversed(range(200)) if backward.select(object_id(n)) is not None
        }

        assert picked_forward == picked_backward

    def test_seed_changes_choice(self) -> None:
        """A different seed picks different requests."""
        faults = faults_of({"kind": "disconnect", "rate": 0.5})
        plans = [FaultPlan(faults, seed=seed) for seed in (1, 2)]
        picked = [{n for n in range(200) if plan.select(object_id(n))} for plan in plans]

        assert picked[0] != picked[1]


class TestStatusFault:
    """Status faults, sent with Graph's error envelope."""

    async def test_calls_then_success(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """calls [1, 2] fails the first two requests of an object, then it succeeds."""
        fault = {"kind": "status", "status": 503, "code": "ServiceUnavailable",
                 "retry_after": "2", "calls": [1, 2]}  # fmt: skip
        client = await client_with_faults(new_emulator, http, fault)
        responses = [await client.acquire() for _ in range(3)]

        assert [response.status for response in responses] == [503, 503, 204]
        assert responses[0].error["code"] == "ServiceUnavailable"
        assert responses[0].headers["Retry-After"] == "2"
        assert "request-id" in responses[0].headers
        assert client.emulator.calls[-3].fault == "status"
        assert client.emulator.calls[-1].fault is None

    async def test_default_codes(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Without a code, 504 gets UnknownError with an empty message and no Retry-After."""
        client = await client_with_faults(new_emulator, http, {"kind": "status", "status": 504})
        response = await client.acquire()

        assert response.status == 504
        assert response.error == response.error | {"code": "UnknownError", "message": ""}
        assert "Retry-After" not in response.headers

    async def test_numeric_retry_after(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A number given for retry_after is sent as written."""
        fault = {"kind": "status", "status": 429, "retry_after": 7}
        client = await client_with_faults(new_emulator, http, fault)
        response = await client.acquire()

        assert response.headers["Retry-After"] == "7"
        assert response.error["code"] == "TooManyRequests"
        assert client.emulator.stats.throttled == 1

    async def test_fault_before_object_check(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A fault fires even for an object that does not exist, as faults come first."""
        client = await client_with_faults(new_emulator, http, {"kind": "status", "status": 500})
        response = await client.acquire(MISSING_ID)

        assert response.status == 500

    async def test_fault_after_authentication(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """An unauthenticated request gets 401, not the fault, and does not count a call."""
        fault = {"kind": "status", "status": 503, "calls": [1]}
        client = await client_with_faults(new_emulator, http, fault)
        unauthenticated = await client.acquire(token="")
        first = await client.acquire()

        assert unauthenticated.status == 401
        assert first.status == 503


class TestStormFault:
    """Time windows in which every Graph request gets 503."""

    async def test_storm_window(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Requests inside the window get 503 with Retry-After; later ones succeed."""
        storm = {"kind": "storm", "start_seconds": 0, "duration_seconds": 0.5, "retry_after": "1"}
        client = await client_with_faults(new_emulator, http, storm)
        during = [await client.acquire(object_id(n)) for n in range(3)]
        await asyncio.sleep(0.6)
        after = await client.acquire()

        assert [response.status for response in during] == [503, 503, 503]
        assert during[0].error["code"] == "serviceNotAvailable"
        assert during[0].headers["Retry-After"] == "1"
        assert after.status == 204
        assert client.emulator.stats.faults["storm"] == 3

    async def test_storm_starts_later(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A storm starts start_seconds after the first Graph request, not at startup."""
        storm = {"kind": "storm", "start_seconds": 0.3, "duration_seconds": 5}
        client = await client_with_faults(new_emulator, http, storm)
        await asyncio.sleep(0.4)
        first = await client.acquire()
        await asyncio.sleep(0.4)
        later = await client.acquire()

        assert first.status == 204
        assert later.status == 503
        assert "Retry-After" not in later.headers

    async def test_storm_hits_missing_objects(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """During a storm even requests for missing objects get 503."""
        storm = {"kind": "storm", "duration_seconds": 5}
        client = await client_with_faults(new_emulator, http, storm)

        assert (await client.acquire(MISSING_ID)).status == 503


class TestConnectionFaults:
    """Faults that break the connection instead of responding."""

    async def test_disconnect(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """disconnect closes the connection without a response."""
        client = await client_with_faults(new_emulator, http, {"kind": "disconnect", "calls": [1]})

        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.acquire()

        record = client.emulator.calls[-1]
        assert record.status == 0
        assert record.fault == "disconnect"
        assert (await client.acquire()).status == 204

    async def test_reset(self, new_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
        """reset cuts the connection in the middle of the response headers."""
        client = await client_with_faults(new_emulator, http, {"kind": "reset", "calls": [1]})

        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await client.acquire()

        record = client.emulator.calls[-1]
        assert record.status == 0
        assert record.fault == "reset"
        assert (await client.acquire()).status == 204

    async def test_reset_sends_partial_head(self, new_emulator: StartEmulator) -> None:
        """reset writes the status line and part of the headers before the RST."""
        emulator = await new_emulator(faults=[{"kind": "reset"}])
        token = emulator.mint_token()
        received = await raw_exchange(emulator, token)

        assert received.startswith(b"HTTP/1.1 204 No Content\r\nrequest-id: ")
        assert not received.endswith(b"\r\n\r\n")

    async def test_slow_times_out(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """slow outlasts a short client timeout, and the call is recorded as dropped."""
        fault = {"kind": "slow", "delay_seconds": 0.5, "calls": [1]}
        client = await client_with_faults(new_emulator, http, fault)
        timeout = aiohttp.ClientTimeout(total=0.1)

        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                client.action_url(OBJECT_ID),
                json={"credentials": []},
                headers={"Authorization": f"Bearer {client.token}"},
                ssl=client.ssl,
                timeout=timeout,
            ):
                pass

        await wait_for_records(client.emulator, 1)
        assert client.emulator.calls[-1].fault == "slow"
        assert client.emulator.calls[-1].status == 0

    async def test_slow_then_responds(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A patient client gets the normal response after the delay."""
        fault = {"kind": "slow", "delay_seconds": 0.3}
        client = await client_with_faults(new_emulator, http, fault)
        started = time.monotonic()
        response = await client.acquire()

        assert response.status == 204
        assert time.monotonic() - started >= 0.3
        assert client.emulator.calls[-1].status == 204


async def raw_exchange(emulator: Emulator, token: str) -> bytes:
    """Send one request over a raw TLS stream and return every byte received before the end."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        int(emulator.url.rsplit(":", 1)[1]),
        ssl=emulator_helpers.client_ssl_context(emulator),
    )
    body = json.dumps({"credentials": []}).encode()
    head = (
        f"POST /v1.0/servicePrincipals/{OBJECT_ID}/synchronization/acquireAccessToken HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    received = b""
    try:
        while chunk := await reader.read(4096):
            received += chunk
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    return received


class TestMalformedFaults:
    """Responses whose body or status a careful client must survive."""

    async def response_for(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession, fault: dict[str, Any]
    ) -> emulator_helpers.CapturedResponse:
        """Start an emulator with ``fault`` on every request and return one response."""
        client = await client_with_faults(new_emulator, http, fault)
        response = await client.acquire()

        assert client.emulator.calls[-1].fault == fault["kind"]
        assert client.emulator.calls[-1].status == response.status

        return response

    async def test_html(self, new_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
        """html sends a proxy's HTML error page."""
        response = await self.response_for(new_emulator, http, {"kind": "html"})

        assert response.status == 502
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.body.startswith(b"<html>")
        assert b"502 Bad Gateway" in response.body

    async def test_non_json(self, new_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
        """non_json claims JSON but sends plain text."""
        response = await self.response_for(new_emulator, http, {"kind": "non_json", "status": 503})

        assert response.status == 503
        assert response.headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            response.json()

    async def test_empty_body(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """empty_body sends an error status with no body."""
        response = await self.response_for(new_emulator, http, {"kind": "empty_body"})

        assert response.status == 503
        assert response.body == b""
        assert response.headers["Content-Length"] == "0"

    async def test_truncated(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """truncated sends the first half of a Graph error body."""
        response = await self.response_for(new_emulator, http, {"kind": "truncated"})

        assert response.status == 500
        assert response.body.startswith(b'{"error":{"code":"UnknownError"')
        with pytest.raises(json.JSONDecodeError):
            response.json()

    async def test_unknown_status(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """unknown_status sends a status HTTP does not define."""
        response = await self.response_for(new_emulator, http, {"kind": "unknown_status"})

        assert response.status == 599
        assert response.error["code"] == "UnknownError"

    async def test_given_status(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A malformed fault uses the status given in the scenario."""
        response = await self.response_for(new_emulator, http, {"kind": "html", "status": 504})

        assert response.status == 504
        assert b"504 Gateway Timeout" in response.body


class TestLatency:
    """latency_ms delays every Graph response."""

    async def test_fixed_latency(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A fixed latency delays each response by at least that long."""
        emulator = await new_emulator(latency_ms=150)
        client = await graph_client(emulator, http)
        started = time.monotonic()
        await client.acquire()

        assert time.monotonic() - started >= 0.15

    async def test_latency_not_blocking(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Concurrent requests wait in parallel, so latency does not add up."""
        emulator = await new_emulator(latency_ms={"min": 180, "max": 200})
        client = await graph_client(emulator, http)
        started = time.monotonic()
        responses = await asyncio.gather(*(client.acquire(object_id(n)) for n in range(10)))
        elapsed = time.monotonic() - started

        assert all(response.status == 204 for response in responses)
        assert 0.18 <= elapsed < 1.0

    async def test_latency_spares_token_endpoint(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Token requests are not delayed by latency_ms."""
        emulator = await new_emulator(latency_ms=1000)
        started = time.monotonic()
        await graph_client(emulator, http)

        assert time.monotonic() - started < 1.0
