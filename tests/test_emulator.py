"""Tests of the emulator's Entra endpoints, its Graph action and its call records.

Every test talks to a real emulator over TLS: the token endpoint through MSAL, Graph through an
aiohttp session.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from urllib.parse import quote_plus

import aiohttp
import jwt
import pytest

from batchsync.emulator import Emulator
from batchsync.emulator.graph import SYNCHRONIZATION_SECRET_KEYS
from tests import emulator_helpers
from tests.emulator_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    CREDENTIALS_BODY,
    EXPIRED_SECRET,
    MISSING_ID,
    OBJECT_ID,
    SYNC_ROLE,
    TENANT_DOMAIN,
    TENANT_ID,
    GraphClient,
    StartEmulator,
    acquire_token,
    decode_unverified,
    graph_client,
    object_id,
)

# pytest looks for fixtures in the test module's namespace.
fixture_emulator = emulator_helpers.fixture_emulator
fixture_graph = emulator_helpers.fixture_graph
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOKEN_PATH = f"/{TENANT_ID}/oauth2/v2.0/token"
WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="{login}/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def client_credentials_form(emulator: Emulator, **overrides: str) -> dict[str, str]:
    """Return a valid client credentials form, with fields replaced by ``overrides``."""
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": f"{emulator.graph_url}/.default",
    }
    form.update(overrides)

    return form


class TestOpenIdConfiguration:
    """The tenant discovery document MSAL reads before a token request."""

    async def test_document_by_tenant_id(self, graph: GraphClient) -> None:
        """The document names the token endpoint and issuer of the tenant's GUID."""
        response = await graph.get(f"/{TENANT_ID}/v2.0/.well-known/openid-configuration")
        document = response.json()
        base = graph.emulator.url

        assert response.status == 200
        assert document["token_endpoint"] == f"{base}/{TENANT_ID}/oauth2/v2.0/token"
        assert document["authorization_endpoint"] == f"{base}/{TENANT_ID}/oauth2/v2.0/authorize"
        assert document["issuer"] == f"{base}/{TENANT_ID}/v2.0"
        assert document["jwks_uri"] == f"{base}/{TENANT_ID}/discovery/v2.0/keys"
        assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
        assert "client_secret_post" in document["token_endpoint_auth_methods_supported"]

    async def test_document_by_domain(self, graph: GraphClient) -> None:
        """A tenant addressed by domain gets endpoints under its GUID, as Entra does."""
        response = await graph.get(
            f"/{TENANT_DOMAIN.upper()}/v2.0/.well-known/openid-configuration"
        )

        assert response.status == 200
        assert response.json()["token_endpoint"].endswith(f"/{TENANT_ID}/oauth2/v2.0/token")

    async def test_unknown_tenant(self, graph: GraphClient) -> None:
        """An unknown tenant gets 400 invalid_tenant with AADSTS90002 in Entra's error shape."""
        response = await graph.get(
            "/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration"
        )
        body = response.json()

        assert response.status == 400
        assert body["error"] == "invalid_tenant"
        assert body["error_codes"] == [90002]
        assert body["error_description"].startswith(
            "AADSTS90002: Tenant 'fabrikam.onmicrosoft.com' not found."
        )

    async def test_signing_keys_empty(self, graph: GraphClient) -> None:
        """The keys document is empty, because tokens are signed with a shared secret."""
        response = await graph.get(f"/{TENANT_ID}/discovery/v2.0/keys")

        assert response.status == 200
        assert response.json() == {"keys": []}


class TestInstanceDiscovery:
    """The instance discovery endpoint MSAL calls for hosts it does not know."""

    async def test_discovery_for_own_host(self, graph: GraphClient) -> None:
        """An authorization endpoint on the emulator maps to its tenant discovery URL."""
        base = graph.emulator.url
        response = await graph.get(
            "/common/discovery/instance",
            **{
                "api-version": "1.1",
                "authorization_endpoint": f"{base}/{TENANT_ID}/oauth2/v2.0/authorize",
            },
        )
        document = response.json()

        assert response.status == 200
        assert document["tenant_discovery_endpoint"] == (
            f"{base}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
        )
        assert document["metadata"][0]["aliases"] == [base.removeprefix("https://")]

    async def test_discovery_for_foreign_host(self, graph: GraphClient) -> None:
        """An authorization endpoint on another host gets invalid_instance AADSTS50049."""
        response = await graph.get(
            "/common/discovery/instance",
            authorization_endpoint="https://login.example.invalid/common/oauth2/v2.0/authorize",
        )

        assert response.status == 400
        assert response.json()["error"] == "invalid_instance"
        assert response.json()["error_codes"] == [50049]


class TestTokenEndpoint:
    """Client credentials through real MSAL, and the errors Entra returns."""

    async def test_secret_grants_token(self, emulator: Emulator) -> None:
        """MSAL gets a Bearer token whose claims describe the app and the Graph audience."""
        result = await acquire_token(emulator)
        claims = decode_unverified(result["access_token"])

        assert result["token_type"] == "Bearer"
        assert 3600 <= result["expires_in"] <= 5400
        assert claims["aud"] == emulator.graph_url
        assert claims["iss"] == f"{emulator.login_url}/{TENANT_ID}/v2.0"
        assert claims["tid"] == TENANT_ID
        assert claims["appid"] == CLIENT_ID
        assert claims["roles"] == [SYNC_ROLE]
        assert claims["appidacr"] == "1"
        assert GUID.match(claims["oid"])
        assert claims["nbf"] <= time.time() < claims["exp"]
        assert claims["iat"] == claims["nbf"]

    async def test_token_signed_hs256(self, emulator: Emulator) -> None:
        """The token is an HS256 JWT, and listed in issued_tokens."""
        result = await acquire_token(emulator)
        header = jwt.get_unverified_header(result["access_token"])

        assert header["alg"] == "HS256"
        assert emulator.issued_tokens == [result["access_token"]]

    async def test_raw_response_fields(self, graph: GraphClient) -> None:
        """The success body has token_type, expires_in, ext_expires_in and access_token."""
        response = await graph.post_form(TOKEN_PATH, client_credentials_form(graph.emulator))
        body = response.json()

        assert response.status == 200
        assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
        assert body["ext_expires_in"] == body["expires_in"]

    async def test_unique_token_ids(self, graph: GraphClient) -> None:
        """Each token has its own uti claim."""
        form = client_credentials_form(graph.emulator)
        first = (await graph.post_form(TOKEN_PATH, form)).json()["access_token"]
        second = (await graph.post_form(TOKEN_PATH, form)).json()["access_token"]

        assert decode_unverified(first)["uti"] != decode_unverified(second)["uti"]

    async def test_fixed_lifetime(self, new_emulator: StartEmulator) -> None:
        """An integer lifetime_seconds is the exact expires_in."""
        emulator = await new_emulator(tokens={"lifetime_seconds": 1234})
        result = await acquire_token(emulator)

        assert result["expires_in"] == 1234

    async def test_tenant_by_domain(self, emulator: Emulator) -> None:
        """An authority naming the tenant's domain works and yields the tenant's GUID as tid."""
        result = await acquire_token(emulator, tenant=TENANT_DOMAIN)

        assert decode_unverified(result["access_token"])["tid"] == TENANT_ID

    async def test_other_cloud_audience(self, emulator: Emulator) -> None:
        """A scope for another resource yields a token with that audience."""
        result = await acquire_token(emulator, scopes=["https://graph.microsoft.us/.default"])

        assert decode_unverified(result["access_token"])["aud"] == "https://graph.microsoft.us"

    async def test_basic_authentication(self, graph: GraphClient) -> None:
        """A secret sent only by HTTP Basic authentication is accepted."""
        form = client_credentials_form(graph.emulator)
        del form["client_secret"]
        # MSAL form-encodes both parts before base64, as RFC 6749 section 2.3.1 requires.
        pair = f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
        response = await graph.post_form(TOKEN_PATH, form, {"Authorization": authorization})

        assert response.status == 200

    async def test_wrong_secret(self, emulator: Emulator) -> None:
        """A wrong secret gets invalid_client AADSTS7000215 in Entra's full error shape."""
        result = await acquire_token(emulator, credential="not-the-secret")

        assert result["error"] == "invalid_client"
        assert result["error_codes"] == [7000215]
        description = result["error_description"]
        assert description.startswith("AADSTS7000215: Invalid client secret provided.")
        assert f"Trace ID: {result['trace_id']}" in description
        assert f"Correlation ID: {result['correlation_id']}" in description
        assert re.search(r"\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", description)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", result["timestamp"])
        assert GUID.match(result["trace_id"])
        assert result["error_uri"] == f"{emulator.login_url}/error?code=7000215"

    async def test_wrong_secret_status(self, graph: GraphClient) -> None:
        """A wrong secret gets HTTP 401."""
        form = client_credentials_form(graph.emulator, client_secret="not-the-secret")
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 401

    async def test_correlation_id_echoed(self, graph: GraphClient) -> None:
        """The caller's client-request-id becomes the error's correlation_id."""
        correlation_id = str(uuid.uuid4())
        form = client_credentials_form(graph.emulator, client_secret="wrong")
        response = await graph.post_form(TOKEN_PATH, form, {"client-request-id": correlation_id})

        assert response.json()["correlation_id"] == correlation_id
        assert response.headers["client-request-id"] == correlation_id

    async def test_expired_secret(self, emulator: Emulator) -> None:
        """An expired secret gets invalid_client AADSTS7000222 with HTTP 401."""
        result = await acquire_token(emulator, credential=EXPIRED_SECRET)

        assert result["error"] == "invalid_client"
        assert result["error_codes"] == [7000222]
        assert result["error_description"].startswith("AADSTS7000222: ")

    async def test_unknown_client(self, emulator: Emulator) -> None:
        """An unknown client id gets unauthorized_client AADSTS700016."""
        unknown = str(uuid.uuid4())
        result = await acquire_token(emulator, client_id=unknown)

        assert result["error"] == "unauthorized_client"
        assert result["error_codes"] == [700016]
        assert (
            f"Application with identifier '{unknown}' was not found"
            in (result["error_description"])
        )

    async def test_client_of_other_tenant(self, new_emulator: StartEmulator) -> None:
        """An app registered in another tenant is unknown in this one."""
        other_tenant = str(uuid.uuid4())
        emulator = await new_emulator(
            tenants=[{"id": TENANT_ID}, {"id": other_tenant}],
            apps=[{"client_id": CLIENT_ID, "tenant": other_tenant, "secrets": [CLIENT_SECRET]}],
        )
        result = await acquire_token(emulator, tenant=TENANT_ID)

        assert result["error_codes"] == [700016]

    async def test_unknown_tenant_at_token_endpoint(self, graph: GraphClient) -> None:
        """A token request to an unknown tenant gets 400 invalid_request AADSTS90002."""
        form = client_credentials_form(graph.emulator)
        response = await graph.post_form("/nowhere.example/oauth2/v2.0/token", form)

        assert response.status == 400
        assert response.json()["error"] == "invalid_request"
        assert response.json()["error_codes"] == [90002]

    async def test_unknown_tenant_through_msal(self, emulator: Emulator) -> None:
        """MSAL cannot even be built for an unknown tenant, because discovery gets a 400."""
        with pytest.raises(ValueError, match="Unable to get authority configuration"):
            await acquire_token(emulator, tenant="nowhere.example")

        assert emulator.calls[-1].endpoint == "openid"
        assert emulator.calls[-1].status == 400

    @pytest.mark.parametrize(
        "scope",
        [
            "https://graph.microsoft.com/User.Read",
            "{url}/.default https://graph.microsoft.com/.default",
            "openid",
        ],
    )
    async def test_invalid_scope(self, graph: GraphClient, scope: str) -> None:
        """A scope without /.default, naming two resources, or naming none gets AADSTS70011."""
        form = client_credentials_form(graph.emulator, scope=scope.format(url=graph.emulator.url))
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 400
        assert response.json()["error"] == "invalid_scope"
        assert response.json()["error_codes"] == [70011]

    async def test_invalid_scope_through_msal(self, emulator: Emulator) -> None:
        """MSAL passes the invalid_scope error through to its caller."""
        result = await acquire_token(emulator, scopes=[f"{emulator.graph_url}/Sync.Write"])

        assert result["error"] == "invalid_scope"

    async def test_reserved_scopes_ignored(self, graph: GraphClient) -> None:
        """OpenID Connect scopes next to a /.default scope are ignored, as Entra does."""
        scope = f"openid profile offline_access {graph.emulator.url}/.default"
        form = client_credentials_form(graph.emulator, scope=scope)
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 200

    async def test_unsupported_grant_type(self, graph: GraphClient) -> None:
        """A grant other than client_credentials gets unsupported_grant_type."""
        form = client_credentials_form(graph.emulator, grant_type="password")
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 400
        assert response.json()["error"] == "unsupported_grant_type"

    async def test_missing_credential(self, graph: GraphClient) -> None:
        """A request with neither secret nor assertion gets invalid_client AADSTS7000218."""
        form = client_credentials_form(graph.emulator)
        del form["client_secret"]
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 401
        assert response.json()["error_codes"] == [7000218]

    async def test_missing_client_id(self, graph: GraphClient) -> None:
        """A request without client_id gets invalid_request AADSTS900144 naming the field."""
        form = client_credentials_form(graph.emulator)
        del form["client_id"]
        response = await graph.post_form(TOKEN_PATH, form)

        assert response.status == 400
        assert response.json()["error_codes"] == [900144]
        assert "'client_id'" in response.json()["error_description"]


class TestGraphSuccess:
    """A valid acquireAccessToken call and the headers every Graph response carries."""

    async def test_no_content(self, graph: GraphClient) -> None:
        """A valid call gets 204 with an empty body."""
        response = await graph.acquire()

        assert response.status == 204
        assert response.body == b""

    async def test_correlation_headers(self, graph: GraphClient) -> None:
        """request-id is fresh, client-request-id is echoed, and diagnostics are JSON."""
        client_request_id = str(uuid.uuid4())
        response = await graph.acquire(headers={"client-request-id": client_request_id})

        assert GUID.match(response.headers["request-id"])
        assert response.headers["request-id"] != client_request_id
        assert response.headers["client-request-id"] == client_request_id
        assert "ServerInfo" in response.headers["x-ms-ags-diagnostic"]
        assert response.headers["Date"].endswith(" GMT")
        assert response.headers["x-ms-resource-unit"] == "1"

    async def test_client_request_id_defaults(self, graph: GraphClient) -> None:
        """Without client-request-id, the echoed one equals request-id."""
        response = await graph.acquire()

        assert response.headers["client-request-id"] == response.headers["request-id"]

    async def test_fresh_request_ids(self, graph: GraphClient) -> None:
        """Each response has its own request-id."""
        first = await graph.acquire()
        second = await graph.acquire()

        assert first.headers["request-id"] != second.headers["request-id"]

    @pytest.mark.parametrize("version", ["v1.0", "beta"])
    @pytest.mark.parametrize("collection", ["servicePrincipals", "applications"])
    async def test_routes(self, graph: GraphClient, version: str, collection: str) -> None:
        """Both API versions and both object collections are served."""
        response = await graph.acquire(version=version, collection=collection)

        assert response.status == 204

    async def test_every_secret_key(self, graph: GraphClient) -> None:
        """All 45 synchronizationSecret names are accepted."""
        credentials = [{"key": key, "value": "x"} for key in sorted(SYNCHRONIZATION_SECRET_KEYS)]
        response = await graph.acquire(body={"credentials": credentials})

        assert len(SYNCHRONIZATION_SECRET_KEYS) == 45
        assert response.status == 204

    async def test_odata_type_allowed(self, graph: GraphClient) -> None:
        """Items may carry @odata.type next to key and value."""
        item = {
            "@odata.type": "microsoft.graph.synchronizationSecretKeyStringValuePair",
            "key": "BaseAddress",
            "value": "https://scim.example",
        }
        response = await graph.acquire(body={"credentials": [item]})

        assert response.status == 204


class TestGraphAuthentication:
    """Bearer token checks, which Graph runs before anything else."""

    async def assert_invalid_token(self, graph: GraphClient, token: str, message: str) -> None:
        """Call with ``token`` and check Graph's 401 InvalidAuthenticationToken response."""
        response = await graph.acquire(token=token)

        assert response.status == 401
        assert response.error["code"] == "InvalidAuthenticationToken"
        assert response.error["message"] == message
        expected = WWW_AUTHENTICATE.format(login=graph.emulator.login_url)
        assert response.headers["WWW-Authenticate"] == expected

    async def test_missing_token(self, graph: GraphClient) -> None:
        """No Authorization header gets "Access token is empty."."""
        await self.assert_invalid_token(graph, "", "Access token is empty.")

    async def test_forged_signature(self, graph: GraphClient) -> None:
        """A token signed with another key gets "Invalid signature."."""
        claims = decode_unverified(graph.token)
        forged = jwt.encode(claims, "another-key-of-32-bytes-or-more!!", algorithm="HS256")

        await self.assert_invalid_token(graph, forged, "Invalid signature.")

    async def test_token_of_other_emulator(
        self, graph: GraphClient, new_emulator: StartEmulator
    ) -> None:
        """A token minted by another emulator run fails the signature check."""
        other = await new_emulator()
        other_token = other.mint_token(aud=graph.emulator.url)

        await self.assert_invalid_token(graph, other_token, "Invalid signature.")

    async def test_malformed_token(self, graph: GraphClient) -> None:
        """A token that is not a JWT gets Graph's compact token parsing message."""
        await self.assert_invalid_token(
            graph, "not-a-jwt", "CompactToken parsing failed with error code: 80049217"
        )

    async def test_expired_token(self, graph: GraphClient) -> None:
        """A token expired beyond the clock skew gets the lifetime message."""
        token = graph.emulator.mint_token(exp=int(time.time()) - 600)

        await self.assert_invalid_token(
            graph, token, "Access token has expired or is not yet valid."
        )

    async def test_future_token(self, graph: GraphClient) -> None:
        """A token whose nbf is beyond the clock skew gets the lifetime message."""
        token = graph.emulator.mint_token(nbf=int(time.time()) + 600)

        await self.assert_invalid_token(
            graph, token, "Access token has expired or is not yet valid."
        )

    async def test_clock_skew_tolerated(self, graph: GraphClient) -> None:
        """A token expired one minute ago still works within the default 5-minute skew."""
        token = graph.emulator.mint_token(exp=int(time.time()) - 60)
        response = await graph.acquire(token=token)

        assert response.status == 204

    async def test_zero_clock_skew(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """With clock_skew_seconds 0, a token expired a second ago is rejected."""
        emulator = await new_emulator(tokens={"clock_skew_seconds": 0})
        client = GraphClient(emulator, http, emulator.mint_token(exp=int(time.time()) - 1))
        response = await client.acquire()

        assert response.status == 401

    async def test_other_audience(self, graph: GraphClient) -> None:
        """A token for another cloud's Graph gets "Invalid audience."."""
        result = await acquire_token(
            graph.emulator, scopes=["https://graph.microsoft.com/.default"]
        )

        await self.assert_invalid_token(graph, result["access_token"], "Invalid audience.")

    async def test_authentication_before_object(self, graph: GraphClient) -> None:
        """A missing object is not revealed to an unauthenticated caller."""
        response = await graph.acquire(MISSING_ID, token="")

        assert response.status == 401


class TestGraphPermissions:
    """Tokens without a synchronization permission."""

    async def test_no_roles(self, graph: GraphClient) -> None:
        """A token without roles gets 401 UnknownError with an empty message."""
        response = await graph.acquire(token=graph.emulator.mint_token(roles=[]))

        assert response.status == 401
        assert response.error["code"] == "UnknownError"
        assert response.error["message"] == ""

    async def test_app_without_permission(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """An app registered without permissions gets a token that Graph rejects."""
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID, "secrets": [CLIENT_SECRET]}
        emulator = await new_emulator(apps=[app])
        client = await graph_client(emulator, http)
        response = await client.acquire()

        assert response.status == 401
        assert response.error["code"] == "UnknownError"

    async def test_owned_by_permission(self, graph: GraphClient) -> None:
        """Application.ReadWrite.OwnedBy is enough."""
        token = graph.emulator.mint_token(roles=["Application.ReadWrite.OwnedBy"])
        response = await graph.acquire(token=token)

        assert response.status == 204


class TestGraphObjects:
    """Object lookup: missing, malformed and listed ids."""

    async def test_missing_object(self, graph: GraphClient) -> None:
        """An id under directory.missing gets 404 Request_ResourceNotFound."""
        response = await graph.acquire(MISSING_ID)

        assert response.status == 404
        assert response.error["code"] == "Request_ResourceNotFound"
        assert response.error["message"] == (
            f"Resource '{MISSING_ID}' does not exist or one of its queried "
            "reference-property objects are not present."
        )

    async def test_missing_ignores_case(self, graph: GraphClient) -> None:
        """Object ids compare without regard to letter case."""
        response = await graph.acquire(MISSING_ID.upper())

        assert response.status == 404

    async def test_malformed_object_id(self, graph: GraphClient) -> None:
        """An id that is not a GUID gets 400 Request_BadRequest."""
        response = await graph.acquire("not-a-guid")

        assert response.status == 400
        assert response.error["code"] == "Request_BadRequest"
        assert response.error["message"] == "Invalid object identifier 'not-a-guid'."

    async def test_listed_objects(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """With explicit lists, only listed ids exist, each in its own collection."""
        emulator = await new_emulator(
            directory={"service_principals": [object_id(1)], "applications": [object_id(2)]}
        )
        client = await graph_client(emulator, http)

        assert (await client.acquire(object_id(1))).status == 204
        assert (await client.acquire(object_id(2), collection="applications")).status == 204
        assert (await client.acquire(object_id(2))).status == 404
        assert (await client.acquire(object_id(1), collection="applications")).status == 404
        assert (await client.acquire(object_id(3))).status == 404


class TestGraphBody:
    """Request body validation, which runs after every other check."""

    @pytest.mark.parametrize("raw_body", [b"", b"   ", b"{not json", b"\xff\xfe"])
    async def test_empty_or_invalid_json(self, graph: GraphClient, raw_body: bytes) -> None:
        """An empty or unparsable body gets 400 "Empty Payload. JSON content expected."."""
        response = await graph.acquire(raw_body=raw_body)

        assert response.status == 400
        assert response.error["code"] == "BadRequest"
        assert response.error["message"] == "Empty Payload. JSON content expected."

    @pytest.mark.parametrize("body", [{}, {"credentials": "BaseAddress"}, [], {"value": []}])
    async def test_missing_credentials(self, graph: GraphClient, body: object) -> None:
        """A body without a credentials list gets 400 BadRequest."""
        response = await graph.acquire(body=body)

        assert response.status == 400
        assert response.error["code"] == "BadRequest"
        assert "'credentials'" in response.error["message"]

    @pytest.mark.parametrize(
        "item",
        [
            {"key": "BaseAddress"},
            {"value": "x"},
            {"key": "BaseAddress", "value": 1},
            {"key": None, "value": "x"},
            "BaseAddress",
        ],
    )
    async def test_invalid_item(self, graph: GraphClient, item: object) -> None:
        """An item without string key and value gets 400 BadRequest."""
        response = await graph.acquire(body={"credentials": [item]})

        assert response.status == 400
        assert response.error["code"] == "BadRequest"

    @pytest.mark.parametrize("key", ["baseAddress", "BASEADDRESS", "Base Address", "Unknown"])
    async def test_unknown_key(self, graph: GraphClient, key: str) -> None:
        """A key not spelled exactly as in the enum gets 500 InternalError naming it."""
        credentials = [{"key": "SecretToken", "value": "x"}, {"key": key, "value": "y"}]
        response = await graph.acquire(body={"credentials": credentials})

        assert response.status == 500
        assert response.error["code"] == "InternalError"
        assert response.error["message"] == f"Requested value '{key}' was not found."

    async def test_body_after_object(self, graph: GraphClient) -> None:
        """A missing object is reported before a bad body."""
        response = await graph.acquire(MISSING_ID, raw_body=b"")

        assert response.status == 404

    async def test_error_envelope(self, graph: GraphClient) -> None:
        """Errors carry code, message and innerError with date and both request ids."""
        client_request_id = str(uuid.uuid4())
        response = await graph.acquire(
            raw_body=b"", headers={"client-request-id": client_request_id}
        )
        inner = response.error["innerError"]

        assert response.headers["Content-Type"] == "application/json"
        assert inner["request-id"] == response.headers["request-id"]
        assert inner["client-request-id"] == client_request_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", inner["date"])


class TestGraphOtherRequests:
    """Methods and paths other than the acquireAccessToken POST."""

    async def test_wrong_method(self, graph: GraphClient) -> None:
        """GET on the action gets 405 in Graph's error shape."""
        response = await graph.acquire(method="GET", raw_body=b"")

        assert response.status == 405
        assert response.error["code"] == "Request_BadRequest"

    async def test_unknown_segment(self, graph: GraphClient) -> None:
        """An unknown Graph path gets 400 naming the segment."""
        response = await graph.get("/v1.0/gadgets/123")

        assert response.status == 400
        assert response.error["message"] == "Resource not found for the segment 'gadgets'."

    async def test_unknown_path(self, graph: GraphClient) -> None:
        """A path outside Graph and Entra gets a plain 404."""
        response = await graph.get("/favicon.ico")

        assert response.status == 404


class TestCallRecords:
    """What the emulator records about each request."""

    async def test_flow_recorded_in_order(self, graph: GraphClient) -> None:
        """Discovery, token and Graph calls are recorded in arrival order with their kinds."""
        await graph.acquire()
        endpoints = [call.endpoint for call in graph.emulator.calls]

        assert endpoints == ["openid", "token", "graph"]

    async def test_graph_record_fields(self, graph: GraphClient) -> None:
        """A Graph record has the object, version, status, ids, credentials and user agent."""
        client_request_id = str(uuid.uuid4())
        response = await graph.acquire(
            OBJECT_ID.upper(),
            collection="applications",
            version="beta",
            headers={"client-request-id": client_request_id, "User-Agent": "batchsync-test/1"},
        )
        record = graph.emulator.calls[-1]

        assert record.method == "POST"
        assert record.object_id == OBJECT_ID
        assert record.object_kind == "application"
        assert record.api_version == "beta"
        assert record.status == 204
        assert record.fault is None
        assert record.client_request_id == client_request_id
        assert record.request_id == response.headers["request-id"]
        assert record.credential_keys == ("BaseAddress", "SecretToken")
        assert record.credentials == {
            item["key"]: item["value"] for item in CREDENTIALS_BODY["credentials"]
        }
        assert record.user_agent == "batchsync-test/1"
        assert record.throttle_percentage is None
        assert record.at <= time.monotonic()
        assert abs(record.wall - time.time()) < 60

    async def test_credentials_hidden_from_repr(self, graph: GraphClient) -> None:
        """A record's repr leaves out the credential values."""
        await graph.acquire()

        assert "canary-secret-token-Vb61" not in repr(graph.emulator.calls[-1])

    async def test_failed_calls_recorded(self, graph: GraphClient) -> None:
        """Rejected calls are recorded with their status and the keys sent."""
        await graph.acquire(body={"credentials": [{"key": "baseAddress", "value": "x"}]})
        record = graph.emulator.calls[-1]

        assert record.status == 500
        assert record.credential_keys == ("baseAddress",)

    async def test_missing_client_request_id(self, graph: GraphClient) -> None:
        """client_request_id is None when the caller sent none."""
        await graph.acquire()

        assert graph.emulator.calls[-1].client_request_id is None

    async def test_stats(self, graph: GraphClient) -> None:
        """Stats count requests, statuses, token requests and requests per object."""
        await graph.acquire()
        await graph.acquire()
        await graph.acquire(MISSING_ID)
        stats = graph.emulator.stats

        assert stats.requests == 5
        assert stats.token_requests == 1
        assert stats.by_status[204] == 2
        assert stats.by_status[404] == 1
        assert stats.by_status[200] == 2
        assert stats.per_object[OBJECT_ID] == 2
        assert stats.per_object[MISSING_ID] == 1
        assert stats.throttled == 0

    async def test_reset_records(self, graph: GraphClient) -> None:
        """reset_records clears calls and stats but keeps issued tokens."""
        await graph.acquire()
        graph.emulator.reset_records()

        assert graph.emulator.calls == []
        assert graph.emulator.stats.requests == 0
        assert graph.emulator.issued_tokens == [graph.token]

    @pytest.mark.parametrize(
        ("path", "endpoint"),
        [
            ("/metadata/identity/oauth2/token", "managed_identity"),
            ("/robots.txt", "other"),
            ("/common/discovery/instance", "instance_discovery"),
        ],
    )
    async def test_endpoint_classes(self, graph: GraphClient, path: str, endpoint: str) -> None:
        """Requests outside Graph and the token endpoint are classified by path."""
        await graph.get(path)

        assert graph.emulator.calls[-1].endpoint == endpoint
        assert graph.emulator.calls[-1].path == path
