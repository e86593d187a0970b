"""Entra ID's login host as the emulator plays it: discovery documents and the token endpoint.

MSAL runs its real client credentials flow against these handlers: tenant discovery, optional
instance discovery, then the token request. The request carries a client secret (in the form
or as HTTP Basic), a certificate-signed client assertion, or a federated token from an
external issuer (workload identity federation). Errors use Entra's JSON shape and the AADSTS
codes that real clients see, so a client's error handling can be tested without Entra.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from batchsync.emulator.assertions import (
    CLIENT_ASSERTION_TYPE,
    InvalidClientAssertionError,
    RegisteredCertificate,
    is_signed_by_certificate,
    verify_client_assertion,
)
from batchsync.emulator.federation import (
    FederatedIdentityCredential,
    load_issuer_key,
    verify_federated_assertion,
)
from batchsync.emulator.records import CallLog, CallRecord, Endpoint
from batchsync.emulator.scenario import AppRegistration, Scenario
from batchsync.emulator.throttling import TokenRequestLimiter
from batchsync.emulator.tokens import TokenIssuer, access_token_claims, request_origin

__all__ = ["EntraError", "EntraService", "entra_error_response"]

# OpenID Connect scopes that Entra ignores in a client credentials request.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


class EntraError(Exception):
    """Entra rejected a request: HTTP status, OAuth ``error``, AADSTS code and message."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message


def entra_error_response(error: EntraError, correlation_id: str, login_url: str) -> web.Response:
    """Build Entra's error response: RFC 6749 fields plus codes, timestamp and trace ids."""
    trace_id = str(uuid.uuid4())
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{error.code}: {error.message}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )
    body = {
        "error": error.error,
        "error_description": description,
        "error_codes": [error.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{login_url}/error?code={error.code}",
    }
    headers = {
        "x-ms-request-id": trace_id,
        "client-request-id": correlation_id,
        "Cache-Control": "no-store, no-cache",
        "Pragma": "no-cache",
    }

    return web.json_response(body, status=error.status, headers=headers)


@dataclass(frozen=True, slots=True)
class _Client:
    registration: AppRegistration
    certificates: tuple[RegisteredCertificate, ...]
    federated: tuple[FederatedIdentityCredential, ...]

    @classmethod
    def load(cls, registration: AppRegistration) -> _Client:
        """Read the app's certificates and issuer keys, which the scenario has checked."""
        federated = tuple(
            FederatedIdentityCredential(
                issuer=credential.issuer,
                subject=credential.subject,
                audiences=frozenset(credential.audiences),
                public_key=load_issuer_key(credential.public_key),
            )
            for credential in registration.federated_credentials
        )
        certificates = tuple(RegisteredCertificate.load(path) for path in registration.certificates)

        return cls(registration, certificates, federated)


@dataclass(slots=True)
class _Started:
    """Arrival time and correlation id of a request, taken before it is handled.

    ``client_id`` and ``assertion_sha256`` are filled in once the form is read, for the record.
    """

    request: web.Request
    at: float
    wall: float
    correlation_id: str
    client_id: str | None = None
    assertion_sha256: str | None = None

    @classmethod
    def now(cls, request: web.Request) -> _Started:
        correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())

        return cls(request, time.monotonic(), time.time(), correlation_id)


class EntraService:
    """Request handlers for the login host."""

    def __init__(
        self, scenario: Scenario, issuer: TokenIssuer, log: CallLog, fixed_url: str | None
    ) -> None:
        self._issuer = issuer
        self._log = log
        self._fixed_url = fixed_url
        self._skew = scenario.tokens.clock_skew_seconds
        self._limiter = TokenRequestLimiter(scenario.tokens.throttle.max_per_minute)
        self._tenants = {tenant.id: tenant.id for tenant in scenario.tenants}
        for tenant in scenario.tenants:
            self._tenants.update(dict.fromkeys(tenant.domains, tenant.id))
        self._clients = {app.client_id: _Client.load(app) for app in scenario.apps}

    async def openid_configuration(self, request: web.Request) -> web.Response:
        """Serve ``GET /{tenant}/v2.0/.well-known/openid-configuration``."""
        started = _Started.now(request)
        base = request_origin(request, self._fixed_url)
        tenant = request.match_info["tenant"]
        tenant_id = self._tenants.get(tenant.lower())
        if tenant_id is None:
            # Discovery reports an unknown tenant as invalid_tenant, the token endpoint as
            # invalid_request, both with the same AADSTS code.
            unknown = _unknown_tenant(tenant)
            error = EntraError(400, "invalid_tenant", unknown.code, unknown.message)
            response = entra_error_response(error, started.correlation_id, base)
        else:
            response = web.json_response(_openid_document(base, tenant_id))

        self._record(started, "openid", response.status)

        return response

    async def jwks(self, request: web.Request) -> web.Response:
        """Serve the signing keys document, empty because tokens are signed with HS256."""
        started = _Started.now(request)
        response = web.json_response({"keys": []})
        self._record(started, "openid", response.status)

        return response

    async def instance_discovery(self, request: web.Request) -> web.Response:
        """Serve ``GET /common/discovery/instance``, which MSAL calls for hosts it does not know."""
        started = _Started.now(request)
        base = request_origin(request, self._fixed_url)
        try:
            document = _instance_document(base, request.query.get("authorization_endpoint"))
            response = web.json_response(document)
        except EntraError as error:
            response = entra_error_response(error, started.correlation_id, base)

        self._record(started, "instance_discovery", response.status)

        return response

    async def token(self, request: web.Request) -> web.Response:
        """Serve ``POST /{tenant}/oauth2/v2.0/token`` for the client credentials grant."""
        started = _Started.now(request)
        base = request_origin(request, self._fixed_url)
        try:
            response = await self._issue_token(started, base)
        except EntraError as error:
            response = entra_error_response(error, started.correlation_id, base)

        self._record(started, "token", response.status)

        return response

    async def _issue_token(self, started: _Started, base: str) -> web.Response:
        request = started.request
        path_tenant = request.match_info["tenant"]
        tenant_id = self._tenants.get(path_tenant.lower())
        if tenant_id is None:
            raise _unknown_tenant(path_tenant)

        form = await request.post()
        assertion = _form_text(form, "client_assertion")
        if assertion:
            # A digest lets tests tell assertions apart without the record holding one.
            started.assertion_sha256 = hashlib.sha256(assertion.encode()).hexdigest()
        _check_grant_type(form)
        basic_id, basic_secret = _basic_credentials(request.headers.get("Authorization"))
        client_id = _form_text(form, "client_id") or basic_id
        if not client_id:
            raise _missing_parameter("client_id")
        started.client_id = client_id
        if not self._limiter.allow(client_id.lower()):
            return _throttled_response()

        client = self._find_client(client_id, tenant_id)
        endpoints = {f"{base}/{name}/oauth2/v2.0/token" for name in (tenant_id, path_tenant)}
        credential_type = self._authenticate(client, form, basic_secret, endpoints)
        resource = _resource_from_scope(_form_text(form, "scope"))

        return self._token_response(client, tenant_id, resource, credential_type, base)

    def _find_client(self, client_id: str, tenant_id: str) -> _Client:
        client = self._clients.get(client_id.lower())
        if client is None or client.registration.tenant != tenant_id:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )

        return client

    def _authenticate(
        self,
        client: _Client,
        form: MultiDictProxy[Any],
        basic_secret: str | None,
        token_endpoints: set[str],
    ) -> str:
        """Check the client's credential and return Entra's ``appidacr``.

        ``appidacr`` is "1" for a client secret and "2" for a client assertion, whether a
        certificate or an external issuer signed it.
        """
        assertion = _form_text(form, "client_assertion")
        if assertion:
            if _form_text(form, "client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise _missing_parameter("client_assertion_type")
            try:
                self._check_assertion(client, assertion, token_endpoints)
            except InvalidClientAssertionError as error:
                raise EntraError(error.status, error.error, error.code, error.message) from error
            return "2"

        secret = _form_text(form, "client_secret") or basic_secret
        if not secret:
            raise EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        _check_secret(client.registration, secret)

        return "1"

    def _check_assertion(self, client: _Client, assertion: str, token_endpoints: set[str]) -> None:
        """Check a certificate assertion, or a federated token when no certificate signed it."""
        if client.federated and not is_signed_by_certificate(assertion, client.certificates):
            verify_federated_assertion(assertion, client.federated, self._skew)
            return

        verify_client_assertion(
            assertion,
            client.registration.client_id,
            client.certificates,
            token_endpoints,
            self._skew,
        )

    def _token_response(
        self, client: _Client, tenant_id: str, resource: str, credential_type: str, base: str
    ) -> web.Response:
        lifetime = self._issuer.draw_lifetime()
        claims = access_token_claims(
            audience=resource,
            issuer=f"{base}/{tenant_id}/v2.0",
            tenant_id=tenant_id,
            client_id=client.registration.client_id,
            roles=client.registration.permissions,
            lifetime_seconds=lifetime,
            credential_type=credential_type,
        )
        body = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self._issuer.mint(claims),
        }

        return web.json_response(body, headers={"Cache-Control": "no-store, no-cache"})

    def _record(self, started: _Started, endpoint: Endpoint, status: int) -> None:
        request = started.request
        record = CallRecord(
            at=started.at,
            wall=started.wall,
            method=request.method,
            path=request.path,
            endpoint=endpoint,
            status=status,
            client_request_id=request.headers.get("client-request-id"),
            request_id=started.correlation_id,
            user_agent=request.headers.get("User-Agent"),
            client_id=started.client_id,
            assertion_sha256=started.assertion_sha256,
        )
        self._log.add(record)


def _unknown_tenant(tenant: str) -> EntraError:
    return EntraError(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud. Check with your subscription administrator, this "
        "may happen if there are no active subscriptions for the tenant.",
    )


def _openid_document(base: str, tenant_id: str) -> dict[str, Any]:
    host = urlsplit(base).netloc
    tenant_url = f"{base}/{tenant_id}"

    return {
        "token_endpoint": f"{tenant_url}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{tenant_url}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{tenant_url}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{tenant_url}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{tenant_url}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{tenant_url}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "roles"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": host,
        "cloud_graph_host_name": host,
        "msgraph_host": host,
    }


def _instance_document(base: str, authorization_endpoint: str | None) -> dict[str, Any]:
    """Build the instance discovery document for an authorization endpoint on this host."""
    host = urlsplit(base).netloc
    tenant = "common"
    if authorization_endpoint:
        parts = urlsplit(authorization_endpoint)
        if parts.netloc.lower() != host.lower():
            raise EntraError(400, "invalid_instance", 50049, "Unknown or invalid instance.")
        tenant = parts.path.strip("/").split("/")[0] or "common"

    return {
        "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }


def _form_text(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name)

    return value if isinstance(value, str) else ""


def _missing_parameter(name: str) -> EntraError:
    return EntraError(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _check_grant_type(form: MultiDictProxy[Any]) -> None:
    grant_type = _form_text(form, "grant_type")
    if not grant_type:
        raise _missing_parameter("grant_type")
    if grant_type != "client_credentials":
        raise EntraError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )


def _basic_credentials(authorization: str | None) -> tuple[str, str | None]:
    """Decode HTTP Basic client credentials, which MSAL form-encodes before base64."""
    if authorization is None:
        return "", None

    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", None

    client_id, separator, secret = decoded.partition(":")
    if not separator:
        return "", None

    return unquote_plus(client_id), unquote_plus(secret)


def _check_secret(registration: AppRegistration, secret: str) -> None:
    if any(hmac.compare_digest(secret, known) for known in registration.secrets):
        return
    if any(hmac.compare_digest(secret, known) for known in registration.expired_secrets):
        raise EntraError(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{registration.client_id}' are expired. "
            "Visit the Azure portal to create new keys for your app: "
            "https://aka.ms/NewClientSecret, or consider using certificate credentials for "
            "added security: https://aka.ms/certCreds.",
        )

    raise EntraError(
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        f"'{registration.client_id}'.",
    )


def _resource_from_scope(scope: str) -> str:
    """Return the one resource that a client credentials scope names."""
    if not scope:
        raise _missing_parameter("scope")

    resources = set()
    for item in scope.split():
        if item.lower() in _RESERVED_SCOPES:
            continue
        if not item.endswith("/.default"):
            raise _invalid_scope(scope)
        resources.add(item.removesuffix("/.default").rstrip("/"))
    if len(resources) != 1:
        raise _invalid_scope(scope)

    return resources.pop()


def _invalid_scope(scope: str) -> EntraError:
    return EntraError(
        400,
        "invalid_scope",
        70011,
        f"The provided value for the input parameter 'scope' is not valid. The scope {scope} "
        "is not valid. A client credentials request must name exactly one resource, as "
        "'<resource>/.default'.",
    )


def _throttled_response() -> web.Response:
    """Build the token endpoint's 429, which is plain text rather than Entra's JSON shape."""
    return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "60"})
