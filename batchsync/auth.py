"""Access tokens for Graph from MSAL's client-credentials flow.

One :class:`TokenProvider` serves the whole run. It keeps the current token in memory and
renews it ahead of expiry, so workers never wait on MSAL in the common case. MSAL blocks, so every
call to it runs in a worker thread, and an ``asyncio.Lock`` keeps a single acquisition in flight:
a hundred workers that find the token stale at once cause one token request, not a hundred
(Entra ID throttles clients that skip the cache with a 429 and ``Retry-After: 60``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from batchsync._redaction import register_secret
from batchsync._tls import PinnedVerifySession, combined_ca_file
from batchsync.clouds import Endpoints, is_loopback_url
from batchsync.credentials import Reference, Secret, resolve
from batchsync.errors import AuthError, CredentialError
from batchsync.log import get_logger
from batchsync.manifest import AuthSettings, ManagedIdentitySettings

__all__ = ["AccessToken", "TokenProvider", "build_client_application"]

log = get_logger(__name__)

# Renew a token this long before it expires, or at half its lifetime when that is shorter, so
# that a request never leaves with a token that expires on the way. JWT times are whole seconds,
# so a short-lived token may expire up to a second before its expires_in value.
REFRESH_MARGIN_SECONDS = 300.0
# After a forced renewal, a second 401 within this window is not the token's fault.
FORCED_REFRESH_COOLDOWN_SECONDS = 60.0
TOKEN_REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and when it stops being used (wall-clock seconds)."""

    value: Secret
    expires_on: float
    refresh_on: float
    generation: int


def build_client_application(auth: AuthSettings, endpoints: Endpoints, tenant: str) -> Any:
    """Build the MSAL client for ``auth``: a confidential client, or a managed identity client.

    MSAL fetches the tenant's OpenID configuration here, so this blocks: call it in a thread.

    Raises:
        AuthError: the tenant is unknown, the login host cannot be reached, or the CA bundle
            for it cannot be read or written to a temporary file.
        CredentialError: the client secret, certificate or federated token does not resolve,
            or no client id is given for workload identity.
    """
    try:
        verify = combined_ca_file(endpoints.ca_bundle)
    except OSError as exc:
        # The extra CA was readable at validation, but it may have been removed since, or the
        # temporary folder may be full.
        message = f"cannot prepare the CA bundle for the login host: {exc.strerror or exc}"
        raise AuthError("tls_error", message) from None
    session = PinnedVerifySession(verify, TOKEN_REQUEST_TIMEOUT_SECONDS)
    try:
        if auth.managed_identity is not None:
            return _managed_identity_client(auth.managed_identity, session)
        return _confidential_client(auth, endpoints, tenant, session)
    except (AuthError, CredentialError):
        session.close()
        raise


def _confidential_client(
    auth: AuthSettings, endpoints: Endpoints, tenant: str, session: PinnedVerifySession
) -> Any:
    client_id = auth.client_id
    if auth.workload_identity:
        client_id = client_id or _workload_identity_client_id()
    credential = _client_credential(auth)
    known_host = not is_loopback_url(endpoints.login) and endpoints.ca_bundle is None
    authority = f"{endpoints.login.rstrip('/')}/{tenant}"
    try:
        return call_msal(
            msal.ConfidentialClientApplication,
            client_id,
            client_credential=credential,
            authority=authority,
            http_client=session,
            # Instance discovery queries login.microsoftonline.com about the authority host, which
            # a custom endpoint (a private proxy, the emulator) must not depend on.
            instance_discovery=known_host,
            app_name="batchsync",
        )
    except AuthError as exc:
        if exc.error != "invalid_authority":
            raise
        raise _discovery_error(session, authority) or exc from None


def _discovery_error(session: PinnedVerifySession, authority: str) -> AuthError | None:
    """Fetch the tenant's OpenID configuration again to read the AADSTS error MSAL hides."""
    try:
        response = session.get(f"{authority}/v2.0/.well-known/openid-configuration")
        body = response.json()
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(body, dict) or "error" not in body:
        return None

    return _auth_error(body)


# MSAL's description of an App Service identity endpoint error: status code, then message.
_APP_SERVICE_ERROR = re.compile(r"^(\d{3}|None), (.*)$", re.DOTALL)
# App Service and Azure Functions set both; MSAL calls IDENTITY_ENDPOINT when both are set.
_APP_SERVICE_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")


def _managed_identity_client(
    settings: ManagedIdentitySettings, session: PinnedVerifySession
) -> Any:
    missing = [name for name in _APP_SERVICE_VARIABLES if not os.environ.get(name)]
    if missing and not settings.imds:
        # MSAL falls back to the instance metadata endpoint, 169.254.169.254. That address
        # exists only on Azure machines, so batchsync goes there only when asked by name.
        unset = " and ".join(missing)
        verb = "is" if len(missing) == 1 else "are"
        message = (
            f"no managed identity endpoint: {unset} {verb} not set; "
            "on an Azure VM, set managed_identity.imds: true to use the instance metadata endpoint"
        )
        raise AuthError("managed_identity_unavailable", message)
    identity: Any = (
        msal.UserAssignedManagedIdentity(client_id=settings.client_id)
        if settings.client_id
        else msal.SystemAssignedManagedIdentity()
    )
    return msal.ManagedIdentityClient(identity, http_client=session)


def _workload_identity_client_id() -> str:
    client_id = os.environ.get("AZURE_CLIENT_ID")
    if not client_id:
        raise CredentialError(
            "auth.client_id",
            "workload identity needs a client id and AZURE_CLIENT_ID is not set",
            fix="set auth.client_id or the azure.workload.identity/client-id annotation",
        )

    return client_id


def _federated_token_reader(token_file: str | None) -> Callable[[], str]:
    path = token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if not path:
        raise CredentialError(
            "auth.workload_identity",
            "AZURE_FEDERATED_TOKEN_FILE is not set",
            fix='label the pod azure.workload.identity/use: "true" or set workload_identity.token_file',
        )
    reference = Reference("file", path)
    resolve(reference)

    def read() -> str:
        # Kubernetes rotates the projected token file; read it at every token request.
        assertion = resolve(reference).reveal()
        register_secret(assertion)
        return assertion

    return read


def _client_credential(auth: AuthSettings) -> Any:
    if auth.workload_identity:
        return {"client_assertion": _federated_token_reader(auth.workload_identity_token_file)}
    if auth.client_secret is not None:
        secret = resolve(auth.client_secret).reveal()
        register_secret(secret)
        return secret
    assert auth.certificate is not None
    return _certificate_credential(auth.certificate)


def _certificate_credential(reference: Any) -> dict[str, str]:
    pem = resolve(reference).reveal()
    register_secret(pem)
    data = pem.encode()
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CredentialError(
            str(reference),
            "the file does not hold an unencrypted PEM private key and its certificate",
            fix="concatenate the key and the certificate into one PEM file",
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    register_secret(key_pem)
    return {
        "private_key": key_pem,
        "thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - x5t is SHA-1 by definition
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


class TokenProvider:
    """Hands out a valid Graph token to every worker, renewing it once for all of them."""

    def __init__(
        self, application: Any, scope: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._application = application
        self._scopes = [scope]
        self._clock = clock
        self._lock = asyncio.Lock()
        self._current: AccessToken | None = None
        self._generation = 0
        self._forced_at = -float("inf")
        self.acquisitions = 0

    async def get(self) -> AccessToken:
        """Return a token that is not due for renewal, acquiring one if needed.

        Raises:
            AuthError: Entra ID refused to issue a token.
        """
        current = self._current
        if current is not None and self._clock() < current.refresh_on:
            return current
        async with self._lock:
            current = self._current
            if current is not None and self._clock() < current.refresh_on:
                return current
            return await self._acquire(force=False)

    async def renew_after_rejection(self, rejected: AccessToken) -> AccessToken | None:
        """Renew the token after Graph returned 401 for ``rejected``.

        Returns the token to retry with, or None when a renewal cannot help: the token was
        itself renewed for a 401 moments ago, so the cause is a permission, not the token.
        """
        async with self._lock:
            current = self._current
            if current is not None and current.generation != rejected.generation:
                return current
            if self._clock() - self._forced_at < FORCED_REFRESH_COOLDOWN_SECONDS:
                return None
            self._forced_at = self._clock()
            return await self._acquire(force=True)

    async def _acquire(self, *, force: bool) -> AccessToken:
        if force:
            await asyncio.to_thread(self._drop_cached_tokens)
        service = (
            "the managed identity endpoint"
            if isinstance(self._application, msal.ManagedIdentityClient)
            else "the login host"
        )
        result = await asyncio.to_thread(call_msal, self._request_token, service=service)
        self.acquisitions += 1
        token = self._token_from(result)
        self._current = token
        log.info(
            "auth.token.acquired",
            generation=token.generation,
            expires_in_s=round(token.expires_on - self._clock()),
            forced=force,
        )

        return token

    def _token_from(self, result: dict[str, Any]) -> AccessToken:
        if "access_token" not in result:
            if isinstance(self._application, msal.ManagedIdentityClient):
                raise _managed_identity_error(result)
            raise _auth_error(result)
        value = result["access_token"]
        register_secret(value)
        now = self._clock()
        lifetime = float(result.get("expires_in", 3599))
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
        self._generation += 1

        return AccessToken(Secret(value), now + lifetime, now + lifetime - margin, self._generation)

    def _request_token(self) -> Any:
        if isinstance(self._application, msal.ManagedIdentityClient):
            # Managed identity endpoints take a resource, not a scope.
            resource = self._scopes[0].removesuffix("/.default")
            return self._application.acquire_token_for_client(resource=resource)

        return self._application.acquire_token_for_client(self._scopes)

    def close(self) -> None:
        """Close MSAL's HTTP session and its pooled connections."""
        # ManagedIdentityClient (MSAL 1.39) has no public http_client, only _http_client.
        client = getattr(self._application, "http_client", None) or getattr(
            self._application, "_http_client", None
        )
        if client is not None:
            client.close()

    def _drop_cached_tokens(self) -> None:
        cache = getattr(self._application, "token_cache", None) or getattr(
            self._application, "_token_cache", None
        )
        if cache is None:
            return
        for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(entry)


def call_msal(
    function: Callable[..., Any], *args: Any, service: str = "the login host", **kwargs: Any
) -> Any:
    """Call an MSAL function, turning its transport and configuration exceptions into AuthError.

    MSAL raises ``requests`` exceptions when the login host cannot be reached, and ``ValueError``
    both when tenant discovery fails (an unknown tenant gets a 400 from the OpenID configuration
    400) and when the token endpoint answers with a body that is not JSON (its plain-text 429).
    ``service`` names the host in transport errors.
    """
    try:
        return function(*args, **kwargs)
    except requests.exceptions.SSLError:
        message = f"TLS verification of {service} failed; check endpoints.ca_bundle"
        raise AuthError("tls_error", message) from None
    except requests.RequestException as exc:
        message = f"cannot reach {service}: {type(exc).__name__}"
        raise AuthError("connection_error", message) from None
    except ValueError as exc:
        text = _first_line(str(exc))
        if "authority" in text.lower():
            raise AuthError("invalid_authority", text) from None
        message = "the token endpoint returned a body that is not JSON; it may be throttling this client, so try again in a minute"
        raise AuthError("token_endpoint_error", message) from None


def _managed_identity_error(result: dict[str, Any]) -> AuthError:
    """Convert MSAL's result for an error response of the App Service identity endpoint.

    MSAL 1.39 reports each such response as ``invalid_scope`` with "STATUS, MESSAGE" as the
    description, whatever went wrong, so the status and message are taken back out of it.
    """
    description = str(result.get("error_description", ""))
    match = _APP_SERVICE_ERROR.match(description)
    if result.get("error") != "invalid_scope" or match is None:
        return _auth_error(result)

    status, message = match.groups()

    return AuthError(
        "managed_identity_error", f"the managed identity endpoint returned HTTP {status}: {message}"
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _auth_error(result: dict[str, Any]) -> AuthError:
    return AuthError(
        str(result.get("error", "unknown_error")),
        str(result.get("error_description", "")),
        error_codes=tuple(int(code) for code in result.get("error_codes", []) or []),
        correlation_id=result.get("correlation_id"),
    )
