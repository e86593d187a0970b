"""Shared fixtures: a real emulator on loopback over TLS, manifests that point at it, and runs.

Every end-to-end test goes through real MSAL and a real aiohttp session to an emulator started on
127.0.0.1 for that test. Nothing here patches aiohttp or MSAL.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from batchsync.emulator import Emulator, Scenario
from batchsync.job import JobOptions, run_job
from batchsync.log import configure_logging
from batchsync.manifest import load_manifest

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
CLIENT_ID = "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e"
# Canary values: tests assert they never appear in any output or file a run produces.
CLIENT_SECRET = "canary-client-secret-Q7v2xLm9"
CANARY_SECRET = "canary-credential-value-Zr84TqwE"
CANARY_CLIENT_ID = "canary-client-identifier-Pk31sNda"
MISSING_ID = "0badf00d-0000-4000-8000-000000000404"

BASE_SCENARIO: dict[str, Any] = {
    "seed": 1,
    "tenants": [{"id": TENANT_ID, "domains": [TENANT_DOMAIN]}],
    "apps": [
        {
            "client_id": CLIENT_ID,
            "tenant": TENANT_ID,
            "secrets": [CLIENT_SECRET],
            "permissions": ["Synchronization.ReadWrite.All"],
        }
    ],
    "directory": {"service_principals": "*", "applications": "*", "missing": [MISSING_ID]},
}


def object_id(number: int) -> str:
    """Return a stable GUID for target ``number``."""
    return f"00000000-0000-4000-8000-{number:012d}"


def sp_target(number: int, **credentials: Any) -> dict[str, Any]:
    """Return a service-principal target whose credentials come from canary env variables."""
    return {
        "name": f"app-{number:05d}",
        "service_principal": object_id(number),
        "credentials": credentials
        or {
            "ClientIdentifier": {"env": "TEST_CLIENT_IDENTIFIER"},
            "ClientSecret": {"env": "TEST_CLIENT_SECRET_VALUE"},
            "BaseAddress": {"value": "https://provisioning.example/scim"},
        },
    }


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` merged in, mappings recursively."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value

    return result


@dataclass
class RunResult:
    """What one run produced: exit code, stdout, log output and the parsed report."""

    exit_code: int
    stdout: str
    logs: str
    report_path: Path

    @property
    def records(self) -> list[dict[str, Any]]:
        """Return every report line, parsed."""
        lines = self.report_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        """Return target lines by target name."""
        return {r["name"]: r for r in self.records if r["record"] == "target"}

    @property
    def summary(self) -> dict[str, Any]:
        """Return the summary line."""
        last = self.records[-1]
        assert last["record"] == "summary"
        return last

    def everything(self) -> str:
        """Return stdout, logs and the report as one text, for secret scans."""
        return self.stdout + self.logs + self.report_path.read_text(encoding="utf-8")


@pytest.fixture(autouse=True, name="_clean_environment")
def fixture_clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test the canary variables, and the REQUESTS_CA_BUNDLE trap set as on CI."""
    monkeypatch.setenv("BATCHSYNC_TEST_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("TEST_CLIENT_IDENTIFIER", CANARY_CLIENT_ID)
    monkeypatch.setenv("TEST_CLIENT_SECRET_VALUE", CANARY_SECRET)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(bundle):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(name="start_emulator")
async def fixture_start_emulator(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    """Start emulators on 127.0.0.1 from BASE_SCENARIO plus overrides; stop them after the test."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(**overrides: Any) -> Emulator:
            nonlocal count
            count += 1
            scenario = Scenario.model_validate(merge(BASE_SCENARIO, overrides))
            state_dir = tmp_path / f"emulator-{count}"
            return await stack.enter_async_context(
                Emulator(scenario, host="127.0.0.1", port=0, state_dir=state_dir)
            )

        yield start


def manifest_for(
    emulator: Emulator, targets: list[dict[str, Any]], **overrides: Any
) -> dict[str, Any]:
    """Return manifest data pointing at ``emulator`` through a custom cloud, as a user would."""
    data: dict[str, Any] = {
        "version": 1,
        "tenant": TENANT_DOMAIN,
        "cloud": "custom",
        "endpoints": {
            "graph": emulator.graph_url,
            "login": emulator.login_url,
            "ca_bundle": str(emulator.ca_path),
        },
        "api_version": "v1.0",
        "auth": {"client_id": CLIENT_ID, "client_secret": {"env": "BATCHSYNC_TEST_CLIENT_SECRET"}},
        "limits": {"concurrency": 4, "requests_per_second": 200, "max_attempts": 4,
                   "request_timeout_seconds": 10, "backoff_base_seconds": 0.05,
                   "backoff_max_seconds": 0.2},
        "targets": targets,
    }  # fmt: skip

    return merge(data, overrides)


@pytest.fixture(name="run")
def fixture_run(tmp_path: Path) -> Callable[..., Awaitable[RunResult]]:
    """Write a manifest, run it in-process against the emulator, and collect every output."""
    counter = 0

    async def run(manifest: dict[str, Any], *, verbose: bool = False, **options: Any) -> RunResult:
        nonlocal counter
        counter += 1
        manifest_path = tmp_path / f"manifest-{counter}.yaml"
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        report_path = tmp_path / "reports" / f"report-{counter}.jsonl"
        logs, stdout = io.StringIO(), io.StringIO()
        configure_logging(level=10 if verbose else 20, log_format="json", stream=logs)
        job_options = JobOptions(report_path=report_path, **options)
        exit_code = await run_job(load_manifest(manifest_path), job_options, out=stdout)
        return RunResult(exit_code, stdout.getvalue(), logs.getvalue(), report_path)

    return run


def batchsync_command(*args: str) -> list[str]:
    """Return the argv that runs the batchsync CLI from this interpreter."""
    return [sys.executable, "-m", "batchsync", *args]
