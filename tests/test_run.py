"""End-to-end runs against the emulator over TLS, through real MSAL and aiohttp."""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest

from batchsync.job import EXIT_AUTH, EXIT_FAILED, EXIT_OK

from .conftest import (
    CANARY_CLIENT_ID,
    CANARY_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    MISSING_ID,
    TENANT_ID,
    manifest_for,
    object_id,
    sp_target,
)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class TestSuccessfulRun:
    """A run in which Graph accepts every call."""

    async def test_every_target_succeeds(self, start_emulator, run):
        """Three targets of both kinds succeed with 204 and exit code 0."""
        emulator = await start_emulator()
        targets = [sp_target(1), sp_target(2)]
        targets.append(
            {
                "name": "dropbox",
                "application": object_id(3),
                "credentials": {"BaseAddress": {"value": "https://x.example"}},
            }
        )
        result = await run(manifest_for(emulator, targets))

        assert result.exit_code == EXIT_OK
        assert [t["status"] for t in result.targets.values()] == ["succeeded"] * 3
        assert {t["http_status"] for t in result.targets.values()} == {204}
        assert result.targets["dropbox"]["kind"] == "application"
        assert result.targets["app-00001"]["kind"] == "servicePrincipal"

    async def test_emulator_receives_the_credentials(self, start_emulator, run):
        """The request body carries each key with its resolved value, on the right URL."""
        emulator = await start_emulator()
        await run(manifest_for(emulator, [sp_target(7)]))

        graph_calls = [c for c in emulator.calls if c.endpoint == "graph"]
        assert len(graph_calls) == 1
        call = graph_calls[0]
        assert (
            call.path
            == f"/v1.0/servicePrincipals/{object_id(7)}/synchronization/acquireAccessToken"
        )
        assert call.credentials == {
            "ClientIdentifier": CANARY_CLIENT_ID,
            "ClientSecret": CANARY_SECRET,
            "BaseAddress": "https://provisioning.example/scim",
        }

    async def test_beta_and_application_paths(self, start_emulator, run):
        """api_version beta and application targets reach /beta/applications/{id}/…."""
        emulator = await start_emulator()
        target = {
            "name": "a",
            "application": object_id(9),
            "credentials": {"SyncAll": {"value": "True"}},
        }
        result = await run(manifest_for(emulator, [target], api_version="beta"))

        assert result.exit_code == EXIT_OK
        paths = [c.path for c in emulator.calls if c.endpoint == "graph"]
        assert paths == [f"/beta/applications/{object_id(9)}/synchronization/acquireAccessToken"]

    async def test_request_ids_and_user_agent(self, start_emulator, run):
        """Each request has a fresh client-request-id GUID and a batchsync User-Agent, kept in the report."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(n) for n in range(5)]))

        calls = [c for c in emulator.calls if c.endpoint == "graph"]
        ids = {c.client_request_id for c in calls}
        assert len(ids) == 5
        for value in ids:
            assert uuid.UUID(value).version == 4
        assert all(c.user_agent.startswith("batchsync/") for c in calls)
        reported = {t["client_request_id"] for t in result.targets.values()}
        assert reported == ids
        request_ids = {c.request_id for c in calls}
        assert {t["request_id"] for t in result.targets.values()} == request_ids

    async def test_report_shape(self, start_emulator, run):
        """The report has a run line, one line per target and a summary, with the fixed fields."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1), sp_target(2)]))
        records = result.records

        assert records[0]["record"] == "run"
        assert set(records[0]) == {"record", "run_id", "started_at", "manifest", "manifest_sha256",
                                   "batchsync_version", "tenant", "cloud", "targets", "shard",
                                   "resumed_from"}  # fmt: skip
        assert records[0]["targets"] == 2
        assert len(records[0]["manifest_sha256"]) == 64
        target = records[1]
        assert set(target) == {"record", "name", "kind", "object_id", "status", "http_status", "error",
                               "attempts", "throttled", "request_id", "client_request_id",
                               "started_at", "finished_at", "duration_ms"}  # fmt: skip
        assert ISO_UTC.match(target["started_at"])
        assert ISO_UTC.match(target["finished_at"])
        assert target["error"] is None
        assert target["attempts"] == 1
        summary = result.summary
        assert summary["counts"] == {"succeeded": 2, "failed": 0, "cancelled": 0, "skipped": 0}
        assert summary["exit_code"] == EXIT_OK
        assert summary["interrupted"] is False
        assert summary["requests"] == 2
        assert summary["run_id"] == records[0]["run_id"]

    async def test_human_summary(self, start_emulator, run):
        """stdout ends with counts, failures by code and the report path."""
        emulator = await start_emulator()
        targets = [sp_target(1), {**sp_target(2), "service_principal": MISSING_ID}]
        result = await run(manifest_for(emulator, targets))

        assert "2 targets" in result.stdout
        assert "1 succeeded, 1 failed" in result.stdout
        assert "Request_ResourceNotFound 1" in result.stdout
        assert str(result.report_path) in result.stdout


class TestFailedTargets:
    """Targets that Graph rejects end failed, with Graph's error code, and the run goes on."""

    async def test_unknown_object_is_404(self, start_emulator, run):
        """An object that does not exist fails once with 404 Request_ResourceNotFound."""
        emulator = await start_emulator()
        targets = [{**sp_target(1), "service_principal": MISSING_ID}, sp_target(2)]
        result = await run(manifest_for(emulator, targets))
        failed = result.targets["app-00001"]

        assert result.exit_code == EXIT_FAILED
        assert failed["status"] == "failed"
        assert failed["http_status"] == 404
        assert failed["error"]["code"] == "Request_ResourceNotFound"
        assert MISSING_ID in failed["error"]["message"]
        assert failed["attempts"] == 1
        assert result.targets["app-00002"]["status"] == "succeeded"

    async def test_bad_request_is_not_retried(self, start_emulator, run):
        """A 400 from Graph fails the target after exactly one attempt."""
        emulator = await start_emulator(
            faults=[
                {
                    "kind": "status",
                    "status": 400,
                    "code": "BadRequest",
                    "message": "Empty Payload. JSON content expected.",
                    "objects": [object_id(1)],
                }
            ]
        )
        result = await run(manifest_for(emulator, [sp_target(1)]))
        failed = result.targets["app-00001"]

        assert failed["http_status"] == 400
        assert failed["error"]["code"] == "BadRequest"
        assert failed["attempts"] == 1

    async def test_missing_permission_is_permission_denied(self, start_emulator, run):
        """401 UnknownError with an empty message ends as permission_denied, after one token renewal."""
        emulator = await start_emulator(
            apps=[
                {
                    "client_id": "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e",
                    "tenant": TENANT_ID,
                    "secrets": [CLIENT_SECRET],
                    "permissions": [],
                }
            ]
        )
        result = await run(manifest_for(emulator, [sp_target(n) for n in range(6)]))

        statuses = Counter(t["status"] for t in result.targets.values())
        assert statuses == {"failed": 6}
        for target in result.targets.values():
            assert target["http_status"] == 401
            assert target["error"]["code"] == "permission_denied"
            assert "Synchronization.ReadWrite.All" in target["error"]["message"]
        token_requests = [c for c in emulator.calls if c.endpoint == "token"]
        assert len(token_requests) == 2


class TestAuthentication:
    """Sign-in failures stop the run before any Graph call, with exit code 3."""

    @pytest.mark.parametrize(
        ("auth", "aadsts"),
        [
            (
                {"client_id": CLIENT_ID, "client_secret": {"value": "wrong-secret-value"}},
                "AADSTS7000215",
            ),
            (
                {
                    "client_id": "11111111-2222-4333-8444-555555555555",
                    "client_secret": {"env": "BATCHSYNC_TEST_CLIENT_SECRET"},
                },
                "AADSTS700016",
            ),
        ],
        ids=["wrong-secret", "unknown-app"],
    )
    async def test_auth_failure_exits_3(self, start_emulator, run, auth, aadsts):
        """A refused sign-in exits 3, names the AADSTS code, and calls no target."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(1), sp_target(2)])
        manifest["auth"] = auth
        result = await run(manifest)

        assert result.exit_code == EXIT_AUTH
        assert aadsts in result.stdout
        assert [c for c in emulator.calls if c.endpoint == "graph"] == []
        assert [t["status"] for t in result.targets.values()] == ["cancelled", "cancelled"]
        assert result.summary["exit_code"] == EXIT_AUTH
        assert "wrong-secret-value" not in result.everything()

    async def test_unknown_tenant_exits_3(self, start_emulator, run):
        """A tenant the login host does not know exits 3 before any Graph call."""
        emulator = await start_emulator()
        result = await run(
            manifest_for(emulator, [sp_target(1)], tenant="fabrikam.onmicrosoft.com")
        )

        assert result.exit_code == EXIT_AUTH
        assert "AADSTS90002" in result.stdout
        assert [c for c in emulator.calls if c.endpoint == "graph"] == []


class TestLargeRun:
    """Large runs keep the one-line-per-target promise."""

    @pytest.mark.slow
    async def test_thousand_targets_one_line_each(self, start_emulator, run):
        """1,000 targets give exactly 1,000 target lines, each name once, all succeeded."""
        emulator = await start_emulator()
        targets = [sp_target(n) for n in range(1000)]
        result = await run(
            manifest_for(emulator, targets, limits={"concurrency": 16, "requests_per_second": 2000})
        )
        lines = [r for r in result.records if r["record"] == "target"]

        assert len(lines) == 1000
        assert len({line["name"] for line in lines}) == 1000
        assert result.summary["counts"]["succeeded"] == 1000
        assert result.exit_code == EXIT_OK


class TestSecrets:
    """No secret value reaches any output."""

    async def test_no_secret_in_any_output(self, start_emulator, run):
        """Canary credentials, the client secret and issued tokens appear in no output or report."""
        emulator = await start_emulator()
        targets = [sp_target(1), {**sp_target(2), "service_principal": MISSING_ID}]
        result = await run(manifest_for(emulator, targets), verbose=True)
        everything = result.everything()

        for secret in (CLIENT_SECRET, CANARY_SECRET, CANARY_CLIENT_ID, *emulator.issued_tokens):
            assert secret not in everything
        assert emulator.issued_tokens
