"""Responses Graph should never send: each ends its target with a clear error, and the run goes on.

Target app-00001 gets the bad response and app-00002 a normal one in every test, so each test
also checks that one broken response does not stop the other targets. The emulator sends the bad
responses, except for large and slow bodies, which a small plain-HTTP server on loopback sends
(the manifest accepts http for loopback addresses).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from batchsync.graph import MAX_ERROR_BODY_BYTES
from batchsync.job import EXIT_FAILED, EXIT_OK

from .conftest import manifest_for, object_id, sp_target

FAULTED = object_id(1)


def faulted(**fault: Any) -> dict[str, Any]:
    """Return a fault that applies to app-00001's requests only."""
    return {"objects": [FAULTED], **fault}


def graph_calls(emulator: Any, object_number: int = 1) -> list[Any]:
    """Return the emulator's Graph call records for one target's object."""
    expected_id = object_id(object_number)
    return [c for c in emulator.calls if c.endpoint == "graph" and c.object_id == expected_id]


def log_events(logs: str, event: str) -> list[dict[str, Any]]:
    """Return the JSON log events named ``event``."""
    parsed = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [e for e in parsed if e["event"] == event]


async def run_two(start_emulator: Any, run: Any, *faults: dict[str, Any], **overrides: Any) -> Any:
    """Run app-00001 (faulted) and app-00002 against an emulator with ``faults``."""
    emulator = await start_emulator(faults=list(faults))
    result = await run(manifest_for(emulator, [sp_target(1), sp_target(2)], **overrides))
    assert result.targets["app-00002"]["status"] == "succeeded"
    assert result.targets["app-00002"]["attempts"] == 1
    return emulator, result


class TestBodiesThatAreNotGraphErrors:
    """Error statuses whose body is not Graph's JSON error envelope."""

    async def test_html_error_page(self, start_emulator, run):
        """A gateway's HTML page on a 502 is retried, then fails with its media type and size."""
        emulator, result = await run_two(start_emulator, run, faulted(kind="html"))
        failed = result.targets["app-00001"]

        assert result.exit_code == EXIT_FAILED
        assert failed["status"] == "failed"
        assert failed["http_status"] == 502
        assert failed["attempts"] == 4
        assert len(graph_calls(emulator)) == 4
        assert failed["error"]["code"] == "http_502"
        assert re.fullmatch(
            r"HTTP 502 with a body that is not a Graph error \(text/html, \d+ bytes\)",
            failed["error"]["message"],
        )

    async def test_html_page_on_400_not_retried(self, start_emulator, run):
        """An HTML page on a 400 fails after one attempt, as any 400 does."""
        _, result = await run_two(start_emulator, run, faulted(kind="html", status=400))
        failed = result.targets["app-00001"]

        assert failed["attempts"] == 1
        assert failed["http_status"] == 400
        assert failed["error"]["code"] == "http_400"
        assert "not a Graph error (text/html, " in failed["error"]["message"]

    async def test_non_json_body(self, start_emulator, run):
        """Plain text labelled JSON on a 500 is retried twice, then fails as not a Graph error."""
        emulator, result = await run_two(start_emulator, run, faulted(kind="non_json"))
        failed = result.targets["app-00001"]

        assert failed["status"] == "failed"
        assert failed["http_status"] == 500
        assert failed["attempts"] == 3
        assert len(graph_calls(emulator)) == 3
        assert failed["error"]["code"] == "http_500"
        assert re.fullmatch(
            r"HTTP 500 with a body that is not a Graph error \(application/json, \d+ bytes\)",
            failed["error"]["message"],
        )

    async def test_empty_error_body(self, start_emulator, run):
        """A 503 with an empty body and no Retry-After is retried, then fails naming the body."""
        _, result = await run_two(start_emulator, run, faulted(kind="empty_body"))
        failed = result.targets["app-00001"]

        assert failed["http_status"] == 503
        assert failed["attempts"] == 4
        assert failed["error"] == {
            "code": "http_503",
            "message": "HTTP 503 Service Unavailable with an empty body",
        }

    async def test_truncated_json_body(self, start_emulator, run):
        """Half a Graph error on a 500 fails with a message stating that the body is cut off."""
        _, result = await run_two(start_emulator, run, faulted(kind="truncated"))
        failed = result.targets["app-00001"]

        assert failed["http_status"] == 500
        assert failed["attempts"] == 3
        assert failed["error"]["code"] == "http_500"
        assert re.fullmatch(
            r"HTTP 500 with a JSON body that is cut off \(application/json, \d+ bytes\)",
            failed["error"]["message"],
        )


class TestUnusualStatuses:
    """Statuses Graph never sends for this action: any 2xx is success, anything else an error."""

    @pytest.mark.parametrize("status", [418, 599])
    async def test_unknown_error_status(self, start_emulator, run, status):
        """A status outside the retry rules fails after one attempt, naming the status."""
        _, result = await run_two(
            start_emulator, run, faulted(kind="unknown_status", status=status)
        )
        failed = result.targets["app-00001"]

        assert result.exit_code == EXIT_FAILED
        assert failed["status"] == "failed"
        assert failed["http_status"] == status
        assert failed["attempts"] == 1
        assert failed["error"]["code"] == "UnknownError"
        assert failed["error"]["message"] == f"HTTP {status} UnknownError with an empty message"

    @pytest.mark.parametrize("status", [200, 202, 299])
    async def test_other_2xx_is_success(self, start_emulator, run, status):
        """A 2xx other than 204 counts as success, and the report keeps the status Graph sent."""
        _, result = await run_two(
            start_emulator, run, faulted(kind="unknown_status", status=status)
        )
        target = result.targets["app-00001"]

        assert result.exit_code == EXIT_OK
        assert target["status"] == "succeeded"
        assert target["http_status"] == status
        assert target["attempts"] == 1
        assert target["error"] is None


class TestRetryAfterValues:
    """Retry-After values that are negative, huge or unreadable."""

    @pytest.mark.parametrize("status", [429, 503])
    async def test_negative_means_no_wait(self, start_emulator, run, status):
        """Retry-After: -5 is treated as 0: the retry follows at once and succeeds."""
        fault = faulted(kind="status", status=status, retry_after="-5", calls=[1])
        _, result = await run_two(start_emulator, run, fault)
        target = result.targets["app-00001"]
        retries = log_events(result.logs, "graph.request.retrying")

        assert target["status"] == "succeeded"
        assert target["attempts"] == 2
        assert [(r["target"], r["retry_after_s"], r["wait_s"]) for r in retries] == [
            ("app-00001", 0.0, 0.0)
        ]

    @pytest.mark.parametrize("status", [429, 503])
    async def test_huge_fails_without_stalling_others(self, start_emulator, run, status):
        """Retry-After: 86400 fails that target at once, naming the wait; the others finish."""
        emulator = await start_emulator(
            faults=[faulted(kind="status", status=status, retry_after="86400")]
        )
        targets = [sp_target(n) for n in range(1, 9)]
        began = time.monotonic()
        result = await run(manifest_for(emulator, targets, limits={"concurrency": 2}))
        elapsed = time.monotonic() - began
        failed = result.targets["app-00001"]
        message = failed["error"]["message"]

        assert failed["status"] == "failed"
        assert failed["http_status"] == status
        assert failed["attempts"] == 1
        assert "Graph asked to wait 86400 s" in message
        assert "longer than limits.max_retry_after_seconds (300 s)" in message
        assert "not retried" in message
        others = [t for name, t in result.targets.items() if name != "app-00001"]
        assert [t["status"] for t in others] == ["succeeded"] * 7
        assert result.summary["paused_seconds"] == 0.0
        assert elapsed < 5

    @pytest.mark.parametrize("status", [429, 503])
    async def test_garbage_falls_back_to_backoff(self, start_emulator, run, status):
        """Retry-After: soon cannot be read, so the retry waits an exponential backoff instead."""
        fault = faulted(kind="status", status=status, retry_after="soon", calls=[1])
        _, result = await run_two(start_emulator, run, fault)
        target = result.targets["app-00001"]
        retries = log_events(result.logs, "graph.request.retrying")

        assert target["status"] == "succeeded"
        assert target["attempts"] == 2
        assert len(retries) == 1
        assert retries[0]["retry_after_s"] is None
        # manifest_for sets backoff_base_seconds to 0.05: the first wait is at most that.
        assert 0 <= retries[0]["wait_s"] <= 0.05


class TestDroppedConnections:
    """Connections that break before a response arrives are retried, POST or not."""

    @pytest.mark.parametrize("kind", ["reset", "disconnect"])
    async def test_first_call_dropped_then_succeeds(self, start_emulator, run, kind):
        """A reset or silent close on the first call is retried, and the second call succeeds."""
        emulator, result = await run_two(start_emulator, run, faulted(kind=kind, calls=[1]))
        target = result.targets["app-00001"]
        retries = log_events(result.logs, "graph.request.retrying")

        assert target["status"] == "succeeded"
        assert target["http_status"] == 204
        assert target["attempts"] == 2
        assert [c.fault for c in graph_calls(emulator)] == [kind, None]
        assert [(r["target"], r["graph_error_code"]) for r in retries] == [
            ("app-00001", "connection_error")
        ]

    @pytest.mark.parametrize(
        ("kind", "message"),
        [("reset", "Connection reset by peer"), ("disconnect", "Server disconnected")],
    )
    async def test_always_dropped_fails(self, start_emulator, run, kind, message):
        """A connection dropped on every attempt fails as connection_error after max_attempts."""
        _, result = await run_two(start_emulator, run, faulted(kind=kind))
        failed = result.targets["app-00001"]

        assert failed["status"] == "failed"
        assert failed["http_status"] is None
        assert failed["attempts"] == 4
        assert failed["error"]["code"] == "connection_error"
        assert message in failed["error"]["message"]


GraphHandler = Callable[[web.Request], Any]


@pytest.fixture(name="graph_server")
async def fixture_graph_server() -> AsyncIterator[Callable[[GraphHandler], Any]]:
    """Start plain-HTTP Graph stand-ins on 127.0.0.1 that respond with a given handler."""
    runners: list[web.AppRunner] = []

    async def start(handler: GraphHandler) -> str:
        app = web.Application()
        app.router.add_post(
            "/v1.0/servicePrincipals/{object_id}/synchronization/acquireAccessToken", handler
        )
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def answer_in_pieces(request: web.Request, status: int, body: bytes) -> web.StreamResponse:
    """Send ``body`` in two writes with a pause between, as a slow network delivers it."""
    response = web.StreamResponse(
        status=status, headers={"Content-Type": "application/json", "request-id": "r-1"}
    )
    response.content_length = len(body)
    await response.prepare(request)
    half = len(body) // 2
    await response.write(body[:half])
    await asyncio.sleep(0.2)
    await response.write(body[half:])
    await response.write_eof()
    return response


class TestBodiesThatArriveInPieces:
    """Error bodies split across network reads, or longer than batchsync reads."""

    async def test_graph_error_split_across_reads(self, start_emulator, run, graph_server):
        """A Graph error whose second half arrives later is still read whole and parsed."""
        envelope = {"error": {"code": "Request_BadRequest", "message": "Slow but valid."}}

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            return await answer_in_pieces(request, 400, json.dumps(envelope).encode())

        emulator = await start_emulator()
        graph_url = await graph_server(handler)
        manifest = manifest_for(emulator, [sp_target(1)], endpoints={"graph": graph_url})
        result = await run(manifest)
        failed = result.targets["app-00001"]

        assert failed["http_status"] == 400
        assert failed["error"] == {"code": "Request_BadRequest", "message": "Slow but valid."}
        assert failed["request_id"] == "r-1"

    async def test_body_longer_than_read_limit(self, start_emulator, run, graph_server):
        """A body over the read limit is reported as more than that many bytes, not as cut off."""
        body = b"{" + b" " * (MAX_ERROR_BODY_BYTES * 2) + b"}"

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            return await answer_in_pieces(request, 400, body)

        emulator = await start_emulator()
        graph_url = await graph_server(handler)
        manifest = manifest_for(emulator, [sp_target(1)], endpoints={"graph": graph_url})
        result = await run(manifest)
        failed = result.targets["app-00001"]

        assert failed["attempts"] == 1
        assert failed["error"] == {
            "code": "http_400",
            "message": (
                "HTTP 400 with a body that is not a Graph error "
                f"(application/json, more than {MAX_ERROR_BODY_BYTES} bytes)"
            ),
        }
