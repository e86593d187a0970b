"""Fixtures and clients shared by the emulator tests.

Test modules import the fixtures from here by name. Every helper talks to a real emulator on
127.0.0.1 over TLS: Graph through an aiohttp ``ClientSession``, the token endpoint through
MSAL's ``ConfidentialClientApplication``. MSAL is synchronous, so the async tests call it
through ``asyncio.to_thread`` while the emulator keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msal
import pytest
import requests
from multidict import CIMultiDictProxy

from batchsync.emulator import Emulator, Scenario

if TYPE_CHECKING:
    # A private TypedDict that exists only in the types-requests stubs.
    from requests.sessions import _Settings

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
CLIENT_ID = "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e"
CLIENT_SECRET = "emulator-test-secret-H4w9"
EXPIRED_SECRET = "emulator-expired-secret-P2k7"
OBJECT_ID = "11111111-2222-4333-8444-555555555555"
MISSING_ID = "0badf00d-0000-4000-8000-000000000404"
SYNC_ROLE = "Synchronization.ReadWrite.All"

CREDENTIALS_BODY: dict[str, Any] = {
    "credentials": [
        {"key": "BaseAddress", "value": "https://scim.example/v2"},
        {"key": "SecretToken", "value": "canary-secret-token-Vb61"},
    ]
}

BASIC_SCENARIO: dict[str, Any] = {
    "seed": 5,
    "tenants": [{"id": TENANT_ID, "domains": [TENANT_DOMAIN]}],
    "apps": [
        {
            "client_id": CLIENT_ID,
            "tenant": TENANT_ID,
            "secrets": [CLIENT_SECRET],
            "expired_secrets": [EXPIRED_SECRET],
            "permissions": [SYNC_ROLE],
        }
    ],
    "directory": {"service_principals": "*", "applications": "*", "missing": [MISSING_ID]},
}


def scenario_data(**overrides: Any) -> dict[str, Any]:
    """Return BASIC_SCENARIO with top-level keys replaced by ``overrides``."""
    data = copy.deepcopy(BASIC_SCENARIO)
    data.update(overrides)

    return data


def make_scenario(**overrides: Any) -> Scenario:
    """Validate BASIC_SCENARIO with top-level keys replaced by ``overrides``."""
    return Scenario.model_validate(scenario_data(**overrides))


def object_id(number: int) -> str:
    """Return a distinct, well-formed object id for ``number``."""
    return f"00000000-0000-4000-8000-{number:012d}"


def decode_unverified(token: str) -> dict[str, Any]:
    """Return a JWT's claims without checking the signature."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))

    return claims


class CABundleSession(requests.Session):
    """A requests session that trusts only ``verify``, even when REQUESTS_CA_BUNDLE is set.

    requests lets REQUESTS_CA_BUNDLE override ``Session.verify`` whenever the per-request
    ``verify`` is left at its default, which is what MSAL does.
    """

    def __init__(self, ca_path: Path) -> None:
        super().__init__()
        self.verify = str(ca_path)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: Any,
    ) -> _Settings:
        """Merge as requests does, then restore the session's own CA bundle."""
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify

        return settings


def msal_app(
    emulator: Emulator,
    http_client: requests.Session,
    *,
    client_id: str = CLIENT_ID,
    credential: Any = CLIENT_SECRET,
    tenant: str = TENANT_ID,
) -> msal.ConfidentialClientApplication:
    """Build an MSAL client for the emulator; blocking, because it runs tenant discovery."""
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=f"{emulator.login_url}/{tenant}",
        instance_discovery=False,
        http_client=http_client,
    )


async def acquire_token(
    emulator: Emulator,
    *,
    scopes: list[str] | None = None,
    **app_options: Any,
) -> dict[str, Any]:
    """Run MSAL's client credentials flow against the emulator and return MSAL's result."""

    def run() -> dict[str, Any]:
        with CABundleSession(emulator.ca_path) as http_client:
            app = msal_app(emulator, http_client, **app_options)
            result: dict[str, Any] = app.acquire_token_for_client(
                scopes=scopes or [f"{emulator.graph_url}/.default"]
            )
            return result

    return await asyncio.to_thread(run)


async def graph_token(emulator: Emulator) -> str:
    """Return an access token for the emulator's Graph, obtained through MSAL."""
    result = await acquire_token(emulator)
    token: str = result["access_token"]

    return token


def client_ssl_context(emulator: Emulator) -> ssl.SSLContext:
    """Return a client SSL context that trusts only the emulator's CA."""
    return ssl.create_default_context(cafile=str(emulator.ca_path))


@dataclass(frozen=True)
class CapturedResponse:
    """Status, headers and body of one Graph response."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """Parse the body as JSON."""
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of a Graph error body."""
        error: dict[str, Any] = self.json()["error"]

        return error


class GraphClient:
    """Posts acquireAccessToken requests to one emulator over TLS."""

    def __init__(self, emulator: Emulator, session: aiohttp.ClientSession, token: str) -> None:
        self.emulator = emulator
        self.session = session
        self.token = token
        self.ssl = client_ssl_context(emulator)

    def action_url(
        self, target: str, *, collection: str = "servicePrincipals", version: str = "v1.0"
    ) -> str:
        """Return the acquireAccessToken URL of ``target``."""
        return (
            f"{self.emulator.graph_url}/{version}/{collection}/{target}"
            "/synchronization/acquireAccessToken"
        )

    async def acquire(
        self,
        target: str = OBJECT_ID,
        body: Any = CREDENTIALS_BODY,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw_body: bytes | None = None,
        method: str = "POST",
        **url_options: str,
    ) -> CapturedResponse:
        """Call acquireAccessToken and return the response; ``token=""`` sends no token."""
        request_headers = dict(headers or {})
        bearer = self.token if token is None else token
        if bearer:
            request_headers["Authorization"] = f"Bearer {bearer}"
        if raw_body is None:
            data = json.dumps(body).encode()
            request_headers.setdefault("Content-Type", "application/json")
        else:
            data = raw_body

        async with self.session.request(
            method,
            self.action_url(target, **url_options),
            data=data,
            headers=request_headers,
            ssl=self.ssl,
        ) as response:
            payload = await response.read()
            return CapturedResponse(response.status, response.headers, payload)

    async def get(self, path: str, **params: str) -> CapturedResponse:
        """Send a GET to ``path`` on the emulator, without a token."""
        url = f"{self.emulator.url}{path}"
        async with self.session.get(url, params=params, ssl=self.ssl) as response:
            return CapturedResponse(response.status, response.headers, await response.read())

    async def post_form(
        self, path: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> CapturedResponse:
        """Send a form-encoded POST to ``path`` on the emulator, as a token request."""
        url = f"{self.emulator.url}{path}"
        async with self.session.post(
            url, data=dict(form), headers=dict(headers or {}), ssl=self.ssl
        ) as response:
            return CapturedResponse(response.status, response.headers, await response.read())


StartEmulator = Callable[..., Awaitable[Emulator]]


@pytest.fixture(name="new_emulator")
async def fixture_new_emulator(tmp_path: Path) -> AsyncIterator[StartEmulator]:
    """Start emulators from BASIC_SCENARIO plus overrides, or a given scenario; stop them after."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(scenario: Scenario | None = None, **overrides: Any) -> Emulator:
            nonlocal count
            count += 1
            chosen = scenario if scenario is not None else make_scenario(**overrides)
            emulator = Emulator(chosen, port=0, state_dir=tmp_path / f"emulator-{count}")

            return await stack.enter_async_context(emulator)

        yield start


@pytest.fixture(name="emulator")
async def fixture_emulator(new_emulator: StartEmulator) -> Emulator:
    """Start an emulator with BASIC_SCENARIO."""
    return await new_emulator()


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """Open one aiohttp session for the test and close it afterwards."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="graph")
async def fixture_graph(emulator: Emulator, http: aiohttp.ClientSession) -> GraphClient:
    """Return a Graph client for the basic emulator, holding a token obtained through MSAL."""
    return GraphClient(emulator, http, await graph_token(emulator))


async def graph_client(emulator: Emulator, http: aiohttp.ClientSession) -> GraphClient:
    """Return a Graph client for ``emulator``, holding a token obtained through MSAL."""
    return GraphClient(emulator, http, await graph_token(emulator))
