"""The managed identity endpoint that Azure App Service runs beside the code it hosts.

App Service puts the endpoint's URL in ``IDENTITY_ENDPOINT`` and a per-app value in
``IDENTITY_HEADER``. The hosted code sends ``GET IDENTITY_ENDPOINT?api-version=2019-08-01&
resource=R`` with that value in ``X-IDENTITY-HEADER``, and gets an access token for resource R:
for the system-assigned identity, or for the user-assigned identity named by ``client_id``.
Errors are a small JSON object with ``statusCode`` and ``message``, not Entra's error shape.

The emulator selects a user-assigned identity by ``client_id`` only. ``principal_id``,
``object_id`` and ``mi_res_id`` get the 400 of an identity that is not assigned.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from batchsync.emulator.records import CallLog, CallRecord
from batchsync.emulator.scenario import ManagedIdentity, Scenario
from batchsync.emulator.tokens import TokenIssuer, access_token_claims, request_origin

__all__ = ["API_VERSION", "IDENTITY_HEADER_NAME", "ManagedIdentityService"]

API_VERSION = "2019-08-01"
IDENTITY_HEADER_NAME = "X-IDENTITY-HEADER"

# Query parameters that select a user-assigned identity in API version 2019-08-01.
_OTHER_SELECTORS = ("principal_id", "object_id", "mi_res_id")


class _EndpointError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Call:
    request: web.Request
    at: float
    wall: float
    correlation_id: str
    client_id: str | None = None


class ManagedIdentityService:
    """Request handler for the App Service managed identity endpoint.

    Raises:
        ValueError: the scenario has no ``managed_identity`` section.
    """

    def __init__(
        self, scenario: Scenario, issuer: TokenIssuer, log: CallLog, fixed_url: str | None
    ) -> None:
        if scenario.managed_identity is None:
            raise ValueError("the scenario has no managed_identity section")

        self._issuer = issuer
        self._log = log
        self._fixed_url = fixed_url
        self._identity_header = scenario.managed_identity.identity_header
        self._system_assigned = next(
            (item for item in scenario.managed_identities if item.system_assigned), None
        )
        self._user_assigned = {
            item.client_id: item for item in scenario.managed_identities if not item.system_assigned
        }

    async def token(self, request: web.Request) -> web.Response:
        """Serve ``GET /msi/token?api-version=2019-08-01&resource=R[&client_id=ID]``."""
        call = _Call(request, time.monotonic(), time.time(), str(uuid.uuid4()))
        try:
            response = self._issue_token(call)
        except _EndpointError as error:
            body = {
                "statusCode": error.status,
                "message": error.message,
                "correlationId": call.correlation_id,
            }
            response = web.json_response(body, status=error.status)

        self._log.add(
            CallRecord(
                at=call.at,
                wall=call.wall,
                method=request.method,
                path=request.path,
                endpoint="managed_identity",
                status=response.status,
                client_request_id=request.headers.get("x-ms-client-request-id"),
                request_id=call.correlation_id,
                user_agent=request.headers.get("User-Agent"),
                client_id=call.client_id,
            )
        )

        return response

    def _issue_token(self, call: _Call) -> web.Response:
        request = call.request
        self._check_identity_header(request.headers.get(IDENTITY_HEADER_NAME))
        query = request.query
        _check_api_version(query.get("api-version"))
        resource = query.get("resource", "").strip()
        if not resource:
            raise _EndpointError(400, "The 'resource' query parameter is required.")

        identity = self._find_identity(query)
        call.client_id = identity.client_id
        base = request_origin(request, self._fixed_url)
        lifetime = self._issuer.draw_lifetime()
        claims = access_token_claims(
            audience=resource,
            issuer=f"{base}/{identity.tenant}/v2.0",
            tenant_id=identity.tenant,
            client_id=identity.client_id,
            roles=identity.permissions,
            lifetime_seconds=lifetime,
            credential_type="2",
        )
        body = {
            "access_token": self._issuer.mint(claims),
            "expires_on": str(claims["exp"]),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }

        return web.json_response(body)

    def _check_identity_header(self, value: str | None) -> None:
        # NOTE: App Service documents neither status nor message for a missing or wrong
        # header. Clients report 400 and 401, and the messages here are the emulator's own.
        if not value:
            raise _EndpointError(400, f"The {IDENTITY_HEADER_NAME} header is required.")
        if not hmac.compare_digest(value.encode(), self._identity_header.encode()):
            raise _EndpointError(401, f"The {IDENTITY_HEADER_NAME} header value is not valid.")

    def _find_identity(self, query: Mapping[str, str]) -> ManagedIdentity:
        client_id = query.get("client_id")
        if client_id:
            identity = self._user_assigned.get(client_id.strip().lower())
        elif any(name in query for name in _OTHER_SELECTORS):
            identity = None
        else:
            identity = self._system_assigned
        if identity is None:
            # The message App Service sends when the identity asked for is not assigned.
            raise _EndpointError(400, "Unable to load the proper Managed Identity.")

        return identity


def _check_api_version(version: str | None) -> None:
    if version != API_VERSION:
        raise _EndpointError(
            400,
            f"The api-version '{version or ''}' is not supported; this endpoint serves "
            f"api-version={API_VERSION}.",
        )
