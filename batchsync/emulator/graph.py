"""Graph's ``synchronization/acquireAccessToken`` action, with the real service's responses.

Checks run in the service's order: bearer token, audience, throttling, injected faults,
permission, object existence, then the request body. Every response carries Graph's correlation
headers, and every error uses Graph's OData envelope. Some responses are surprising but real:
a token without the right role gets 401 ``UnknownError`` with an empty message, and a
credential key in the wrong letter case gets a 500.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from batchsync.emulator.faults import (
    FaultPlan,
    drop_connection,
    malformed_response,
    reset_connection,
)
from batchsync.emulator.records import CallLog, CallRecord, Endpoint, ObjectKind
from batchsync.emulator.scenario import (
    Directory,
    MalformedFault,
    Range,
    ResetFault,
    Scenario,
    SelectableFault,
    SlowFault,
    StatusFault,
    StormFault,
    is_guid,
)
from batchsync.emulator.throttling import (
    GraphThrottle,
    format_retry_after,
    format_usage,
    throttle_headers,
)
from batchsync.emulator.tokens import InvalidAccessTokenError, TokenIssuer, request_origin

__all__ = [
    "ACCEPTED_ROLES",
    "GRAPH_APP_ID",
    "SYNCHRONIZATION_SECRET_KEYS",
    "DirectoryIndex",
    "GraphError",
    "GraphService",
]

# The synchronizationSecret enumeration of Graph v1.0, in the exact PascalCase Graph requires.
SYNCHRONIZATION_SECRET_KEYS = frozenset(
    {
        "None", "UserName", "Password", "SecretToken", "AppKey", "BaseAddress",
        "ClientIdentifier", "ClientSecret", "SingleSignOnType", "Sandbox", "Url", "Domain",
        "ConsumerKey", "ConsumerSecret", "TokenKey", "TokenExpiration", "Oauth2AccessToken",
        "Oauth2AccessTokenCreationTime", "Oauth2RefreshToken", "SyncAll", "InstanceName",
        "Oauth2ClientId", "Oauth2ClientSecret", "CompanyId", "UpdateKeyOnSoftDelete",
        "SynchronizationSchedule", "SystemOfRecord", "SandboxName", "EnforceDomain",
        "SyncNotificationSettings", "SkipOutOfScopeDeletions", "Oauth2AuthorizationCode",
        "Oauth2RedirectUri", "ApplicationTemplateIdentifier", "Oauth2TokenExchangeUri",
        "Oauth2AuthorizationUri", "AuthenticationType", "Server",
        "PerformInboundEntitlementGrants", "HardDeletesEnabled", "SyncAgentCompatibilityKey",
        "SyncAgentADContainer", "ValidateDomain", "TestReferences", "ConnectionString",
    }
)  # fmt: skip

# Application id of Microsoft Graph itself, which Graph names in WWW-Authenticate.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# Application permissions that allow acquireAccessToken.
ACCEPTED_ROLES = frozenset({"Synchronization.ReadWrite.All", "Application.ReadWrite.OwnedBy"})

_OBJECT_KINDS: dict[str, ObjectKind] = {
    "servicePrincipals": "servicePrincipal",
    "applications": "application",
}

_AGS_DIAGNOSTIC = json.dumps(
    {
        "ServerInfo": {
            "DataCenter": "Emulator",
            "Slice": "E",
            "Ring": "0",
            "ScaleUnit": "000",
            "RoleInstance": "batchsync-emulator",
        }
    },
    separators=(",", ":"),
)

# Graph error code used by a status fault that names none.
_DEFAULT_ERROR_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Authorization_RequestDenied",
    404: "Request_ResourceNotFound",
    409: "Directory_ConcurrencyViolation",
    429: "TooManyRequests",
    500: "InternalError",
    503: "serviceNotAvailable",
    504: "UnknownError",
}

_EMPTY_PAYLOAD = "Empty Payload. JSON content expected."
_STORM_MESSAGE = "Active Directory operation did not succeed. Try again later."


class GraphError(Exception):
    """Graph rejected the request; converted to an OData error response in one place."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class DirectoryIndex:
    """Index of the service principal and application objects that exist."""

    def __init__(self, directory: Directory) -> None:
        self._missing = frozenset(directory.missing)
        self._objects: dict[ObjectKind, frozenset[str] | None] = {
            "servicePrincipal": _id_set(directory.service_principals),
            "application": _id_set(directory.applications),
        }

    def exists(self, kind: ObjectKind, object_id: str) -> bool:
        """Return whether the object of ``kind`` with the lowercase ``object_id`` exists."""
        if object_id in self._missing:
            return False

        objects = self._objects[kind]

        return objects is None or object_id in objects


def _id_set(ids: list[str] | str) -> frozenset[str] | None:
    """Return the ids as a set, or None when every id exists."""
    return None if ids == "*" else frozenset(ids)


@dataclass(slots=True)
class _GraphCall:
    """State of one Graph request while it is handled."""

    request: web.Request
    at: float
    wall: float
    request_id: str
    client_request_id: str
    object_id: str | None = None
    object_kind: ObjectKind | None = None
    api_version: str | None = None
    fault: str | None = None
    charged: bool = False
    dropped: bool = False
    throttle_percentage: str | None = None
    body: Any = None
    credentials: dict[str, str] = field(default_factory=dict)
    credential_keys: tuple[str, ...] = ()
    client_id: str | None = None

    @classmethod
    def start(cls, request: web.Request) -> _GraphCall:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id

        return cls(request, time.monotonic(), time.time(), request_id, client_request_id)

    def headers(self) -> dict[str, str]:
        """Build the headers every Graph response carries."""
        headers = {
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
            "x-ms-ags-diagnostic": _AGS_DIAGNOSTIC,
            "Strict-Transport-Security": "max-age=31536000",
        }
        if self.charged:
            headers["x-ms-resource-unit"] = "1"
        if self.throttle_percentage is not None:
            headers["x-ms-throttle-limit-percentage"] = self.throttle_percentage

        return headers

    def error_body(self, code: str, message: str) -> bytes:
        """Serialize Graph's OData error envelope for this request."""
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
        }
        envelope = {"error": {"code": code, "message": message, "innerError": inner}}

        return json.dumps(envelope, separators=(",", ":")).encode()

    def record(self, endpoint: Endpoint, status: int) -> CallRecord:
        return CallRecord(
            at=self.at,
            wall=self.wall,
            method=self.request.method,
            path=self.request.path,
            endpoint=endpoint,
            object_id=self.object_id,
            object_kind=self.object_kind,
            api_version=self.api_version,
            status=0 if self.dropped else status,
            fault=self.fault,
            client_request_id=self.request.headers.get("client-request-id"),
            request_id=self.request_id,
            credential_keys=self.credential_keys,
            credentials=self.credentials,
            user_agent=self.request.headers.get("User-Agent"),
            throttle_percentage=self.throttle_percentage,
            client_id=self.client_id,
        )


class GraphService:
    """Request handlers for the Graph side of the emulator."""

    def __init__(
        self,
        scenario: Scenario,
        issuer: TokenIssuer,
        log: CallLog,
        rng: random.Random,
        fixed_url: str | None,
    ) -> None:
        self._issuer = issuer
        self._log = log
        self._rng = rng
        self._fixed_url = fixed_url
        self._latency = scenario.latency_ms
        self._directory = DirectoryIndex(scenario.directory)
        self._throttle = GraphThrottle(scenario.throttling) if scenario.throttling else None
        self._faults = FaultPlan(scenario.faults, scenario.seed)

    async def acquire_access_token(self, request: web.Request) -> web.StreamResponse:
        """Serve ``POST /{version}/{servicePrincipals|applications}/{id}/synchronization/acquireAccessToken``."""
        call = _GraphCall.start(request)
        call.api_version = request.match_info["version"]
        kind = _OBJECT_KINDS[request.match_info["collection"]]
        object_id = request.match_info["object_id"]
        call.object_kind = kind
        call.object_id = object_id.lower()
        self._faults.note_request()
        try:
            response = await self._respond(call, kind, object_id)
        except GraphError as error:
            response = self._error_response(call, error)

        self._log.add(call.record("graph", response.status))

        return response

    async def fallback(self, request: web.Request) -> web.StreamResponse:
        """Serve any other path: Graph's segment error under a version, else a plain 404."""
        call = _GraphCall.start(request)
        segments = request.path.strip("/").split("/")
        if segments[0] in {"v1.0", "beta"}:
            call.api_version = segments[0]
            unknown = segments[1] if len(segments) > 1 else ""
            error = GraphError(
                400, "BadRequest", f"Resource not found for the segment '{unknown}'."
            )
            response: web.StreamResponse = self._error_response(call, error)
            endpoint: Endpoint = "graph"
        else:
            response = web.Response(status=404, text="Not Found")
            endpoint = _classify_other(request.path)

        self._log.add(call.record(endpoint, response.status))

        return response

    async def _respond(
        self, call: _GraphCall, kind: ObjectKind, object_id: str
    ) -> web.StreamResponse:
        request = call.request
        await self._delay()
        self._capture_body(call, await request.read())
        if request.method != "POST":
            raise GraphError(
                405,
                "Request_BadRequest",
                f"The requested resource does not support http method '{request.method}'.",
            )

        claims = self._authenticate(call)
        call.client_id = str(claims.get("appid", "")) or None
        self._charge(call, claims)
        fault_response = await self._inject_fault(call, object_id.lower())
        if fault_response is not None:
            return fault_response

        _check_roles(claims)
        self._check_object(kind, object_id)
        _check_body(call.body)

        return web.Response(status=204, headers=call.headers())

    async def _delay(self) -> None:
        latency = self._latency
        seconds = (
            self._rng.uniform(latency.min, latency.max) if isinstance(latency, Range) else latency
        ) / 1000
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _capture_body(self, call: _GraphCall, raw: bytes) -> None:
        """Parse the body once and keep the credentials sent, for the call record."""
        try:
            call.body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            call.body = None
            return

        items = call.body.get("credentials") if isinstance(call.body, dict) else None
        if not isinstance(items, list):
            return
        pairs = [item for item in items if isinstance(item, dict)]
        call.credential_keys = tuple(str(item.get("key")) for item in pairs)
        call.credentials = {
            str(item.get("key")): str(item.get("value")) for item in pairs if "value" in item
        }

    def _authenticate(self, call: _GraphCall) -> Mapping[str, Any]:
        base = request_origin(call.request, self._fixed_url)
        try:
            return self._issuer.verify(
                call.request.headers.get("Authorization"), {base, base + "/"}
            )
        except InvalidAccessTokenError as error:
            raise GraphError(
                401, "InvalidAuthenticationToken", str(error), _www_authenticate(base)
            ) from error

    def _charge(self, call: _GraphCall, claims: Mapping[str, Any]) -> None:
        """Charge the request to its (app, tenant) buckets; raise 429 when over a limit.

        The charge is reported in ``x-ms-resource-unit`` even when throttling is off.
        """
        call.charged = True
        if self._throttle is None:
            return

        app_id = str(claims.get("appid", ""))
        tenant_id = str(claims.get("tid", ""))
        decision = self._throttle.charge(app_id, tenant_id)
        call.throttle_percentage = format_usage(decision.usage)
        if decision.exceeded is None:
            return

        headers = throttle_headers(decision, app_id, tenant_id)
        retry_after = format_retry_after(self._throttle.retry_after_shape, decision.wait_seconds)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        raise GraphError(429, "TooManyRequests", "Too many requests.", headers)

    async def _inject_fault(self, call: _GraphCall, object_id: str) -> web.StreamResponse | None:
        """Apply the storm or selected fault, returning its response or None to carry on."""
        storm = self._faults.active_storm()
        if storm is not None:
            call.fault = "storm"
            raise _storm_error(storm)

        fault = self._faults.select(object_id)
        if fault is None:
            return None

        call.fault = fault.kind

        return await self._apply_fault(call, fault)

    async def _apply_fault(
        self, call: _GraphCall, fault: SelectableFault
    ) -> web.StreamResponse | None:
        if isinstance(fault, StatusFault):
            raise _status_fault_error(fault)
        if isinstance(fault, SlowFault):
            await asyncio.sleep(fault.delay_seconds)
            call.dropped = _client_gone(call.request)
            return None
        if isinstance(fault, MalformedFault):
            body = call.error_body("UnknownError", "")
            return malformed_response(fault, call.headers(), body)

        call.dropped = True
        if isinstance(fault, ResetFault):
            await reset_connection(call.request, _partial_head(call))
        else:
            drop_connection(call.request)

        # The transport is closed, so aiohttp fails to write this and drops it silently.
        return web.Response(status=204)

    def _check_object(self, kind: ObjectKind, object_id: str) -> None:
        if not is_guid(object_id):
            raise GraphError(400, "Request_BadRequest", f"Invalid object identifier '{object_id}'.")

        if not self._directory.exists(kind, object_id.lower()):
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{object_id}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )

    def _error_response(self, call: _GraphCall, error: GraphError) -> web.Response:
        headers = call.headers()
        headers.update(error.headers)

        return web.Response(
            status=error.status,
            body=call.error_body(error.code, error.message),
            content_type="application/json",
            headers=headers,
        )


def _www_authenticate(login_url: str) -> dict[str, str]:
    value = (
        f'Bearer realm="", authorization_uri="{login_url}/common/oauth2/authorize", '
        f'client_id="{GRAPH_APP_ID}"'
    )

    return {"WWW-Authenticate": value}


def _check_roles(claims: Mapping[str, Any]) -> None:
    """Reject a token without a synchronization permission as Graph does: 401 with no message."""
    roles = claims.get("roles")
    if not isinstance(roles, list) or ACCEPTED_ROLES.isdisjoint(roles):
        raise GraphError(401, "UnknownError", "")


def _check_body(body: Any) -> None:
    """Validate ``{"credentials": [{"key": ..., "value": ...}]}`` and every key's spelling."""
    for item in _credential_items(body):
        if item["key"] not in SYNCHRONIZATION_SECRET_KEYS:
            message = f"Requested value '{item['key']}' was not found."
            raise GraphError(500, "InternalError", message)


def _credential_items(body: Any) -> list[dict[str, Any]]:
    """Return the items of ``credentials``, or raise 400 unless each has string key and value."""
    if body is None:
        raise GraphError(400, "BadRequest", _EMPTY_PAYLOAD)

    items = body.get("credentials") if isinstance(body, dict) else None
    if not isinstance(items, list):
        # NOTE: the text of this message is a guess, because Graph's response to a body
        # without `credentials` is not documented.
        raise GraphError(
            400,
            "BadRequest",
            "The request body must contain a 'credentials' collection of "
            "synchronizationSecretKeyStringValuePair.",
        )
    for item in items:
        if not _is_key_value_pair(item):
            raise GraphError(
                400,
                "BadRequest",
                "Each item of 'credentials' must have string properties 'key' and 'value'.",
            )

    return items


def _is_key_value_pair(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("key"), str)
        and isinstance(item.get("value"), str)
    )


def _storm_error(storm: StormFault) -> GraphError:
    headers = {"Retry-After": storm.retry_after} if storm.retry_after is not None else {}

    return GraphError(503, storm.code, _STORM_MESSAGE, headers)


def _status_fault_error(fault: StatusFault) -> GraphError:
    code = fault.code or _DEFAULT_ERROR_CODES.get(fault.status, "UnknownError")
    message = fault.message if fault.message is not None else ""
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}

    return GraphError(fault.status, code, message, headers)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport

    return transport is None or transport.is_closing()


def _partial_head(call: _GraphCall) -> bytes:
    """Return a response head cut off inside the headers, as a dying proxy would leave it."""
    return (
        f"HTTP/1.1 204 No Content\r\nrequest-id: {call.request_id}\r\nclient-request-id: "
    ).encode()


def _classify_other(path: str) -> Endpoint:
    if path.startswith(("/metadata/identity/", "/msi/")):
        return "managed_identity"

    return "other"
