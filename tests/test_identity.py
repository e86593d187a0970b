"""End-to-end runs that sign in with workload identity or a managed identity.

Each run goes through batchsync's manifest, real MSAL and a real aiohttp session to an emulator
on 127.0.0.1. The environment variables that Kubernetes and App Service set are set with
monkeypatch. A process-wide audit hook stops any connection to the instance metadata address,
so a test that would make MSAL fall back to it fails instead of leaving the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batchsync.emulator import Emulator
from batchsync.job import EXIT_AUTH, EXIT_OK
from tests.conftest import CLIENT_ID, TENANT_ID, RunResult, manifest_for, object_id, sp_target

StartEmulator = Callable[..., Awaitable[Emulator]]
Run = Callable[..., Awaitable[RunResult]]

ISSUER = "https://oidc.cluster.example/2d4c6e80-1a3b-4c5d-8e9f-0a1b2c3d4e5f/"
SUBJECT = "system:serviceaccount:provisioning:batchsync"
AUDIENCE = "api://AzureADTokenExchange"
IDENTITY_HEADER = "canary-identity-header-Nb62Tz"
SYSTEM_IDENTITY = "b7c8d9e0-0000-4000-8000-00000000aaaa"
USER_IDENTITY = "b7c8d9e0-0000-4000-8000-00000000bbbb"
SYNC_ROLE = "Synchronization.ReadWrite.All"
METADATA_ADDRESS = "169.254.169.254"

# Variables with which MSAL picks a managed identity source other than App Service.
OTHER_IDENTITY_VARIABLES = (
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
)


class _ConnectionWatch:
    """Audit hook that records socket connections during a test and blocks the metadata address."""

    def __init__(self) -> None:
        self.addresses: list[Any] | None = None

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.connect":
            return
        address = args[1]
        if self.addresses is not None:
            self.addresses.append(address)
        host = address[0] if isinstance(address, tuple) else address
        if host == METADATA_ADDRESS:
            raise ConnectionRefusedError(f"the tests never connect to {METADATA_ADDRESS}")


# An audit hook cannot be removed, so one is added for the whole test process. It costs one
# string comparison per audited event.
_WATCH = _ConnectionWatch()
sys.addaudithook(_WATCH)


@pytest.fixture(name="connections")
def fixture_connections() -> Iterator[list[Any]]:
    """Return the addresses of every socket connection the test makes, from any thread."""
    addresses: list[Any] = []
    _WATCH.addresses = addresses
    try:
        yield addresses
    finally:
        _WATCH.addresses = None


@pytest.fixture(name="_no_identity_variables", autouse=True)
def fixture_no_identity_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear every variable that selects a managed identity source or workload identity."""
    for name in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        *OTHER_IDENTITY_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="issuer_key", scope="module")
def fixture_issuer_key() -> rsa.RSAPrivateKey:
    """Return the RSA key the emulated cluster's service-account issuer signs with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_token(key: rsa.RSAPrivateKey, lifetime_seconds: int = 3600) -> str:
    """Sign a projected service-account token as the kubelet writes it for the pod."""
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": [AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {"namespace": "provisioning", "serviceaccount": {"name": "batchsync"}},
    }

    return jwt.encode(payload, _private_pem(key), algorithm="RS256", headers={"kid": "cluster-1"})


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def write_token_file(path: Path, token: str) -> None:
    """Replace ``path`` atomically, as the kubelet swaps a projected token, so no read gets half."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(token, encoding="ascii")
    os.replace(staging, path)


def sha256_hex(text: str) -> str:
    """Return the hex SHA-256 digest of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def federated_app(key: rsa.RSAPrivateKey, directory: Path) -> dict[str, Any]:
    """Return an app registration of CLIENT_ID that trusts ISSUER's tokens for SUBJECT."""
    key_path = directory / "issuer-public.pem"
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path.write_bytes(public)

    return {
        "client_id": CLIENT_ID,
        "tenant": TENANT_ID,
        "federated_credentials": [
            {
                "issuer": ISSUER,
                "subject": SUBJECT,
                "audiences": [AUDIENCE],
                "public_key": str(key_path),
            }
        ],
        "permissions": [SYNC_ROLE],
    }


def with_auth(manifest: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    """Return ``manifest`` with its ``auth`` section replaced, not merged."""
    manifest["auth"] = auth

    return manifest


def assert_nothing_leaked(result: RunResult, secrets: list[str]) -> None:
    """Check that no secret appears in stdout, the log or the report."""
    everything = result.everything()
    for secret in secrets:
        assert secret not in everything


class TestWorkloadIdentity:
    """auth.workload_identity with the variables the Azure Workload Identity webhook sets."""

    async def test_run_succeeds(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The projected token signs in, and every Graph call carries a token with the app's id."""
        emulator = await start_emulator(apps=[federated_app(issuer_key, tmp_path)])
        token_file = tmp_path / "azure-identity-token"
        assertion = service_account_token(issuer_key)
        write_token_file(token_file, assertion)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        manifest = with_auth(
            manifest_for(emulator, [sp_target(1), sp_target(2)]), {"workload_identity": {}}
        )
        result = await run(manifest, verbose=True)
        token_calls = [call for call in emulator.calls if call.endpoint == "token"]
        graph_calls = [call for call in emulator.calls if call.endpoint == "graph"]

        assert result.exit_code == EXIT_OK
        assert [target["status"] for target in result.targets.values()] == ["succeeded"] * 2
        assert [call.status for call in token_calls] == [200]
        assert token_calls[0].assertion_sha256 == sha256_hex(assertion)
        assert token_calls[0].client_id == CLIENT_ID
        assert {call.client_id for call in graph_calls} == {CLIENT_ID}
        assert_nothing_leaked(result, [assertion, *emulator.issued_tokens])

    async def test_token_file_setting(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """workload_identity.token_file and auth.client_id work without the variables."""
        emulator = await start_emulator(apps=[federated_app(issuer_key, tmp_path)])
        token_file = tmp_path / "token"
        write_token_file(token_file, service_account_token(issuer_key))
        auth = {"client_id": CLIENT_ID, "workload_identity": {"token_file": str(token_file)}}
        result = await run(with_auth(manifest_for(emulator, [sp_target(1)]), auth))

        assert result.exit_code == EXIT_OK

    async def test_rotated_token_used(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A renewal after the kubelet rotated the token file sends the new token."""
        emulator = await start_emulator(
            apps=[federated_app(issuer_key, tmp_path)],
            tokens={"lifetime_seconds": 2, "clock_skew_seconds": 0},
            latency_ms=250,
        )
        token_file = tmp_path / "azure-identity-token"
        first = service_account_token(issuer_key)
        second = service_account_token(issuer_key)
        write_token_file(token_file, first)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))

        async def rotate_after_first_sign_in() -> None:
            # The emulator has no event for a finished call, so its records are polled.
            while not any(call.endpoint == "token" for call in emulator.calls):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            write_token_file(token_file, second)

        # Twelve calls one at a time at 250 ms each outlast the 2-second access tokens, so
        # batchsync renews the token at least twice.
        targets = [sp_target(number) for number in range(1, 13)]
        manifest = manifest_for(emulator, targets, limits={"concurrency": 1})
        rotation = asyncio.create_task(rotate_after_first_sign_in())
        result = await run(with_auth(manifest, {"workload_identity": {}}), verbose=True)
        await rotation
        token_calls = [call for call in emulator.calls if call.endpoint == "token"]
        digests = [call.assertion_sha256 for call in token_calls]

        assert result.exit_code == EXIT_OK
        assert {call.status for call in token_calls} == {200}
        assert len(token_calls) >= 2
        assert digests[0] == sha256_hex(first)
        assert set(digests[1:]) == {sha256_hex(second)}
        assert_nothing_leaked(result, [first, second, *emulator.issued_tokens])

    async def test_expired_token_file(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An expired projected token stops the run with exit 3 and Entra's AADSTS700024."""
        emulator = await start_emulator(apps=[federated_app(issuer_key, tmp_path)])
        token_file = tmp_path / "azure-identity-token"
        expired = service_account_token(issuer_key, lifetime_seconds=-600)
        write_token_file(token_file, expired)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        result = await run(
            with_auth(manifest_for(emulator, [sp_target(1)]), {"workload_identity": {}})
        )

        assert result.exit_code == EXIT_AUTH
        assert "AADSTS700024" in result.stdout
        assert result.summary["exit_code"] == EXIT_AUTH
        assert not [call for call in emulator.calls if call.endpoint == "graph"]
        assert_nothing_leaked(result, [expired])

    async def test_untrusted_subject(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A service account the app does not trust stops the run with exit 3 and AADSTS70021."""
        app = federated_app(issuer_key, tmp_path)
        app["federated_credentials"][0]["subject"] = "system:serviceaccount:other:other"
        emulator = await start_emulator(apps=[app])
        token_file = tmp_path / "azure-identity-token"
        assertion = service_account_token(issuer_key)
        write_token_file(token_file, assertion)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        result = await run(
            with_auth(manifest_for(emulator, [sp_target(1)]), {"workload_identity": {}})
        )

        assert result.exit_code == EXIT_AUTH
        assert "AADSTS70021" in result.stdout
        assert SUBJECT in result.stdout
        assert_nothing_leaked(result, [assertion])

    async def test_missing_client_id(
        self,
        start_emulator: StartEmulator,
        run: Run,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
        monkeypatch: pytest.MonkeyPatch,
        connections: list[Any],
    ) -> None:
        """Without auth.client_id and AZURE_CLIENT_ID the run stops with exit 3 before any call."""
        emulator = await start_emulator(apps=[federated_app(issuer_key, tmp_path)])
        token_file = tmp_path / "azure-identity-token"
        write_token_file(token_file, service_account_token(issuer_key))
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        result = await run(
            with_auth(manifest_for(emulator, [sp_target(1)]), {"workload_identity": {}})
        )

        assert result.exit_code == EXIT_AUTH
        assert "AZURE_CLIENT_ID" in result.stdout
        assert emulator.calls == []
        assert connections == []


def managed_identity_scenario() -> dict[str, Any]:
    """Return scenario overrides for an App Service with a system- and a user-assigned identity."""
    return {
        "managed_identity": {"identity_header": IDENTITY_HEADER},
        "managed_identities": [
            {"client_id": SYSTEM_IDENTITY, "tenant": TENANT_ID, "system_assigned": True,
             "permissions": [SYNC_ROLE]},
            {"client_id": USER_IDENTITY, "tenant": TENANT_ID, "permissions": [SYNC_ROLE]},
        ],
    }  # fmt: skip


class TestManagedIdentity:
    """auth.managed_identity with App Service's IDENTITY_ENDPOINT and IDENTITY_HEADER."""

    @pytest.mark.parametrize(
        ("settings", "expected_identity"),
        [({}, SYSTEM_IDENTITY), ({"client_id": USER_IDENTITY}, USER_IDENTITY)],
        ids=["system-assigned", "user-assigned"],
    )
    async def test_run_succeeds(
        self,
        start_emulator: StartEmulator,
        run: Run,
        monkeypatch: pytest.MonkeyPatch,
        connections: list[Any],
        settings: dict[str, str],
        expected_identity: str,
    ) -> None:
        """The identity's token signs every Graph call, and nothing else is contacted."""
        emulator = await start_emulator(**managed_identity_scenario())
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        manifest = manifest_for(emulator, [sp_target(1), sp_target(2), sp_target(3)])
        result = await run(with_auth(manifest, {"managed_identity": settings}), verbose=True)
        identity_calls = [call for call in emulator.calls if call.endpoint == "managed_identity"]
        graph_calls = [call for call in emulator.calls if call.endpoint == "graph"]
        port = int(emulator.url.rsplit(":", 1)[1])

        assert result.exit_code == EXIT_OK
        assert [target["status"] for target in result.targets.values()] == ["succeeded"] * 3
        assert [(call.status, call.client_id) for call in identity_calls] == [
            (200, expected_identity)
        ]
        assert sorted(call.object_id or "" for call in graph_calls) == [
            object_id(n) for n in (1, 2, 3)
        ]
        assert {call.client_id for call in graph_calls} == {expected_identity}
        assert not [call for call in emulator.calls if call.endpoint == "token"]
        assert {address[:2] for address in connections} == {("127.0.0.1", port)}
        assert_nothing_leaked(result, [IDENTITY_HEADER, *emulator.issued_tokens])

    async def test_wrong_identity_header(
        self,
        start_emulator: StartEmulator,
        run: Run,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A wrong IDENTITY_HEADER stops the run with exit 3 and the endpoint's status and message."""
        emulator = await start_emulator(**managed_identity_scenario())
        wrong = "canary-wrong-identity-header-Qs50"
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", wrong)
        manifest = manifest_for(emulator, [sp_target(1)])
        result = await run(with_auth(manifest, {"managed_identity": {}}))

        assert result.exit_code == EXIT_AUTH
        assert (
            "managed_identity_error: the managed identity endpoint returned HTTP 401"
            in result.stdout
        )
        assert "X-IDENTITY-HEADER" in result.stdout
        assert result.targets["app-00001"]["error"]["code"] == "managed_identity_error"
        assert not [call for call in emulator.calls if call.endpoint == "graph"]
        assert_nothing_leaked(result, [wrong, IDENTITY_HEADER])

    async def test_unknown_user_identity(
        self,
        start_emulator: StartEmulator,
        run: Run,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A user-assigned identity that is not assigned stops the run with exit 3."""
        emulator = await start_emulator(**managed_identity_scenario())
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        settings = {"client_id": "b7c8d9e0-0000-4000-8000-00000000dddd"}
        result = await run(
            with_auth(manifest_for(emulator, [sp_target(1)]), {"managed_identity": settings})
        )

        assert result.exit_code == EXIT_AUTH
        assert "Unable to load the proper Managed Identity" in result.stdout

    async def test_endpoint_unreachable(
        self,
        start_emulator: StartEmulator,
        run: Run,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An IDENTITY_ENDPOINT with no listener stops the run with exit 3 naming that endpoint."""
        emulator = await start_emulator(**managed_identity_scenario())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"https://127.0.0.1:{closed_port}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        result = await run(
            with_auth(manifest_for(emulator, [sp_target(1)]), {"managed_identity": {}})
        )

        assert result.exit_code == EXIT_AUTH
        assert "cannot reach the managed identity endpoint" in result.stdout
        assert_nothing_leaked(result, [IDENTITY_HEADER])


class TestManagedIdentityRefusal:
    """Without App Service's variables batchsync does not fall back to the metadata endpoint."""

    @pytest.mark.parametrize(
        ("variables", "named"),
        [
            ({}, "IDENTITY_ENDPOINT"),
            ({"IDENTITY_HEADER": IDENTITY_HEADER}, "IDENTITY_ENDPOINT"),
            ({"IDENTITY_ENDPOINT": "https://127.0.0.1:9/msi/token"}, "IDENTITY_HEADER"),
        ],
        ids=["neither", "no-endpoint", "no-header"],
    )
    @pytest.mark.parametrize("settings", [{}, {"client_id": USER_IDENTITY}], ids=["system", "user"])
    async def test_refused_without_variables(
        self,
        start_emulator: StartEmulator,
        run: Run,
        monkeypatch: pytest.MonkeyPatch,
        connections: list[Any],
        variables: dict[str, str],
        named: str,
        settings: dict[str, str],
    ) -> None:
        """The run stops with exit 3 naming the missing variable, and opens no connection."""
        emulator = await start_emulator(**managed_identity_scenario())
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        manifest = manifest_for(emulator, [sp_target(1)])
        result = await run(with_auth(manifest, {"managed_identity": settings}))

        assert result.exit_code == EXIT_AUTH
        assert named in result.stdout
        assert "imds: true" in result.stdout
        assert result.targets["app-00001"]["status"] == "cancelled"
        assert connections == []
        assert emulator.calls == []
