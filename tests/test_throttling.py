"""Throttling and transient faults end to end: the emulator misbehaves, the run still completes."""

from __future__ import annotations

from collections import Counter

import pytest

from batchsync.job import EXIT_FAILED, EXIT_OK

from .conftest import manifest_for, object_id, sp_target


def graph_calls(emulator):
    """Return the emulator's Graph calls in arrival order."""
    return [call for call in emulator.calls if call.endpoint == "graph"]


def attempts_by_object(emulator):
    """Return how many Graph requests reached the emulator per object id."""
    return Counter(call.object_id for call in graph_calls(emulator))


def quiet_gap_after(calls, moment, *, in_flight_window=0.1):
    """Return the seconds from ``moment`` to the first request sent after the client could react.

    Requests already on the wire when the 429 reached the client arrive within
    ``in_flight_window``; the pause applies from the next one on.
    """
    later = [call.at - moment for call in calls if call.at - moment > in_flight_window]
    return min(later) if later else float("inf")


def fault(status, *, code="x", objects=None, calls=None, rate=None, retry_after=None, message=None):
    """Return a status fault for the scenario."""
    selectors = {"objects": objects, "calls": calls, "rate": rate,
                 "retry_after": retry_after, "message": message}  # fmt: skip
    given = {key: value for key, value in selectors.items() if value is not None}
    return {"kind": "status", "status": status, "code": code, **given}


class TestCooperativePause:
    """A Retry-After pauses the whole pool, not only the worker that saw it."""

    async def test_no_request_during_retry_after(self, start_emulator, run):
        """After a 429 with Retry-After: 2, no request reaches the emulator for 2 seconds."""
        emulator = await start_emulator(
            faults=[
                fault(
                    429, code="TooManyRequests", objects=[object_id(0)], calls=[1], retry_after="2"
                )
            ]
        )
        result = await run(
            manifest_for(
                emulator, [sp_target(n) for n in range(12)], limits={"requests_per_second": 20}
            )
        )
        calls = graph_calls(emulator)
        throttled = next(call for call in calls if call.status == 429)
        gap = quiet_gap_after(calls, throttled.at)

        assert result.exit_code == EXIT_OK
        assert gap >= 1.95
        assert result.targets["app-00000"]["attempts"] == 2
        assert result.targets["app-00000"]["throttled"] == 1
        assert result.summary["throttled"] == 1
        assert result.summary["paused_seconds"] >= 1.9

    async def test_http_date_retry_after_is_honoured(self, start_emulator, run):
        """A Retry-After given as an HTTP-date pauses the pool until that moment."""
        emulator = await start_emulator(
            throttling={
                "resource_units": {"burst": 3, "rate": 1},
                "writes": {"burst": 3, "rate": 1},
                "retry_after": "http_date",
            }
        )
        result = await run(
            manifest_for(
                emulator, [sp_target(n) for n in range(5)], limits={"requests_per_second": 50}
            )
        )
        calls = graph_calls(emulator)
        first_429 = next(call for call in calls if call.status == 429)

        assert result.exit_code == EXIT_OK
        assert quiet_gap_after(calls, first_429.at) >= 0.9

    async def test_throttled_run_completes(self, start_emulator, run):
        """Against a small bucket, every target succeeds and 429s stay few."""
        emulator = await start_emulator(
            throttling={
                "resource_units": {"burst": 10, "rate": 40},
                "writes": {"burst": 10, "rate": 40},
            }
        )
        result = await run(
            manifest_for(
                emulator,
                [sp_target(n) for n in range(120)],
                limits={"requests_per_second": 200, "max_attempts": 10},
            )
        )

        assert result.exit_code == EXIT_OK
        assert result.summary["counts"]["succeeded"] == 120
        assert result.summary["throttled"] == emulator.stats.throttled
        assert result.summary["requests"] == len(graph_calls(emulator))


class TestRetryRules:
    """Which statuses are retried, and how often."""

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (400, "BadRequest"),
            (403, "Authorization_RequestDenied"),
            (404, "Request_ResourceNotFound"),
        ],
    )
    async def test_client_errors_tried_once(self, start_emulator, run, status, code):
        """400, 403 and 404 are tried exactly once."""
        emulator = await start_emulator(faults=[fault(status, code=code, objects=[object_id(1)])])
        result = await run(manifest_for(emulator, [sp_target(1)]))
        target = result.targets["app-00001"]

        assert attempts_by_object(emulator)[object_id(1)] == 1
        assert target["status"] == "failed"
        assert target["http_status"] == status
        assert target["error"]["code"] == code

    async def test_500_retried_twice(self, start_emulator, run):
        """A 500 that persists gets two retries: three attempts, then failed."""
        emulator = await start_emulator(
            faults=[fault(500, code="InternalError", objects=[object_id(1)])]
        )
        result = await run(manifest_for(emulator, [sp_target(1)]))

        assert attempts_by_object(emulator)[object_id(1)] == 3
        assert result.targets["app-00001"]["error"]["code"] == "InternalError"
        assert result.exit_code == EXIT_FAILED

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 409])
    async def test_transient_status_then_success(self, start_emulator, run, status):
        """One transient failure, then 204: two attempts, succeeded."""
        emulator = await start_emulator(
            faults=[fault(status, code="UnknownError", message="", calls=[1])]
        )
        result = await run(manifest_for(emulator, [sp_target(1)]))
        target = result.targets["app-00001"]

        assert target["status"] == "succeeded"
        assert target["attempts"] == 2
        assert target["http_status"] == 204

    async def test_persistent_503_stops_at_max_attempts(self, start_emulator, run):
        """A 503 that never clears ends after limits.max_attempts with the 503 in the report."""
        emulator = await start_emulator(
            faults=[fault(503, code="serviceNotAvailable", objects=[object_id(1)])]
        )
        result = await run(manifest_for(emulator, [sp_target(1)], limits={"max_attempts": 3}))
        target = result.targets["app-00001"]

        assert attempts_by_object(emulator)[object_id(1)] == 3
        assert target["http_status"] == 503
        assert target["error"]["code"] == "serviceNotAvailable"

    async def test_long_retry_after_fails_fast(self, start_emulator, run):
        """A Retry-After over max_retry_after_seconds fails the target with the wait in its error."""
        emulator = await start_emulator(
            faults=[fault(429, code="TooManyRequests", objects=[object_id(1)], retry_after="86400")]
        )
        result = await run(
            manifest_for(
                emulator, [sp_target(1), sp_target(2)], limits={"max_retry_after_seconds": 60}
            )
        )
        target = result.targets["app-00001"]

        assert target["status"] == "failed"
        assert target["attempts"] == 1
        assert "86400" in target["error"]["message"]
        assert "max_retry_after_seconds" in target["error"]["message"]
        assert result.targets["app-00002"]["status"] == "succeeded"
        assert result.summary["paused_seconds"] < 1

    async def test_timeout_is_retried(self, start_emulator, run):
        """A response slower than the request timeout is retried and then succeeds."""
        emulator = await start_emulator(faults=[{"kind": "slow", "delay_seconds": 3, "calls": [1]}])
        result = await run(
            manifest_for(emulator, [sp_target(1)], limits={"request_timeout_seconds": 0.5})
        )
        target = result.targets["app-00001"]

        assert target["status"] == "succeeded"
        assert target["attempts"] == 2


class TestFaultRates:
    """Faults spread over many targets."""

    @pytest.mark.slow
    async def test_500_targets_under_20_percent_503(self, start_emulator, run):
        """500 targets with 20% of requests failing 503 all end succeeded."""
        emulator = await start_emulator(faults=[fault(503, code="serviceNotAvailable", rate=0.2)])
        limits = {"concurrency": 16, "requests_per_second": 1000, "max_attempts": 10}
        result = await run(
            manifest_for(emulator, [sp_target(n) for n in range(500)], limits=limits)
        )

        assert result.exit_code == EXIT_OK
        assert result.summary["counts"]["succeeded"] == 500
        assert result.summary["requests"] > 500
        assert emulator.stats.by_status[503] == result.summary["requests"] - 500

    async def test_storm_is_weathered(self, start_emulator, run):
        """A one-second 503 storm across all targets ends with every target succeeded."""
        emulator = await start_emulator(
            faults=[{"kind": "storm", "start_seconds": 0.0, "duration_seconds": 1.0}]
        )
        limits = {"max_attempts": 10, "backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0}
        result = await run(manifest_for(emulator, [sp_target(n) for n in range(20)], limits=limits))

        assert result.exit_code == EXIT_OK
        assert emulator.stats.by_status[503] > 0


class TestTokens:
    """Token reuse and renewal during a run."""

    async def test_one_token_request_per_run(self, start_emulator, run):
        """A run of 200 targets requests one token, even where the endpoint throttles."""
        emulator = await start_emulator(tokens={"throttle": {"max_per_minute": 2}})
        result = await run(
            manifest_for(
                emulator,
                [sp_target(n) for n in range(200)],
                limits={"concurrency": 16, "requests_per_second": 1000},
            )
        )

        assert result.exit_code == EXIT_OK
        assert emulator.stats.token_requests == 1

    async def test_token_expiry_mid_run_costs_nothing(self, start_emulator, run):
        """Tokens that expire every 4 seconds are renewed ahead of time and no target fails."""
        # JWT times are whole seconds, so a token may expire up to 1 s before its expires_in
        # value. 4 s leaves the half-life renewal a second of margin even on a loaded machine.
        emulator = await start_emulator(tokens={"lifetime_seconds": 4, "clock_skew_seconds": 0})
        result = await run(
            manifest_for(
                emulator, [sp_target(n) for n in range(360)], limits={"requests_per_second": 60}
            )
        )

        assert result.exit_code == EXIT_OK
        assert result.summary["counts"]["succeeded"] == 360
        assert emulator.stats.token_requests >= 3
        assert emulator.stats.by_status[401] == 0
