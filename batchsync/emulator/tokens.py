"""Access tokens: minted by the emulator's token endpoint and checked by its Graph endpoint.

Tokens are JWTs with the claims Entra puts in app-only tokens (``aud``, ``tid``, ``appid``,
``roles`` and so on). They are signed with HS256 and a random key per emulator, so only the
emulator that minted a token accepts it, and a token from another run fails like one from
another cloud would.
"""

from __future__ import annotations

import base64
import random
import secrets
import time
import uuid
from collections.abc import Container, Mapping
from typing import Any

import jwt
from aiohttp import web
from jwt.types import Options

from batchsync.emulator.records import CallLog
from batchsync.emulator.scenario import Range, TokenSettings

__all__ = [
    "InvalidAccessTokenError",
    "TokenIssuer",
    "access_token_claims",
    "request_origin",
    "service_principal_id",
]

# Entra backdates iat and nbf by five minutes to absorb clock differences.
_BACKDATE_SECONDS = 300


def request_origin(request: web.Request, fixed_url: str | None) -> str:
    """Return the emulator's base URL: the fixed one, or the scheme and host of ``request``."""
    if fixed_url is not None:
        return fixed_url

    return f"{request.scheme}://{request.host}"


def service_principal_id(client_id: str) -> str:
    """Return a stable object id for the service principal of app ``client_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"batchsync-emulator:{client_id}"))


def access_token_claims(
    *,
    audience: str,
    issuer: str,
    tenant_id: str,
    client_id: str,
    roles: list[str],
    lifetime_seconds: int,
    credential_type: str = "1",
) -> dict[str, Any]:
    """Build the claims of an app-only access token as Entra issues them.

    ``credential_type`` is Entra's ``appidacr``: "1" for a client secret, "2" for a certificate.
    """
    now = int(time.time())
    object_id = service_principal_id(client_id)

    return {
        "aud": audience,
        "iss": issuer,
        "idp": issuer,
        "iat": now - _BACKDATE_SECONDS,
        "nbf": now - _BACKDATE_SECONDS,
        "exp": now + lifetime_seconds,
        "appid": client_id,
        "appidacr": credential_type,
        "idtyp": "app",
        "oid": object_id,
        "sub": object_id,
        "tid": tenant_id,
        "roles": list(roles),
        "uti": base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii"),
        "ver": "1.0",
    }


class InvalidAccessTokenError(Exception):
    """The bearer token is missing, forged, outside its lifetime or meant for another audience.

    The message is the one Graph sends in its ``InvalidAuthenticationToken`` error.
    """


class TokenIssuer:
    """Mints access tokens and checks the ones presented to Graph."""

    def __init__(self, settings: TokenSettings, rng: random.Random, log: CallLog) -> None:
        self._settings = settings
        self._rng = rng
        self._log = log
        self._key = secrets.token_bytes(32)
        # Signature checks dominate the cost of a Graph request, and a client reuses one token
        # for thousands of calls, so verified claims are kept per token string.
        self._verified: dict[str, Mapping[str, Any]] = {}

    def draw_lifetime(self) -> int:
        """Pick a token lifetime in seconds from the scenario's setting."""
        lifetime = self._settings.lifetime_seconds
        if isinstance(lifetime, Range):
            return self._rng.randint(int(lifetime.min), int(lifetime.max))

        return lifetime

    def mint(self, claims: Mapping[str, Any]) -> str:
        """Sign ``claims`` as an access token and add it to ``CallLog.issued_tokens``."""
        token = jwt.encode(dict(claims), self._key, algorithm="HS256", headers={"typ": "JWT"})
        self._log.issued_tokens.append(token)

        return token

    def verify(self, authorization: str | None, audiences: Container[str]) -> Mapping[str, Any]:
        """Check an ``Authorization`` header value and return the token's claims.

        Checks run in Graph's order: presence, signature, lifetime, audience.

        Raises:
            InvalidAccessTokenError: with the message Graph would send.
        """
        token = _bearer_token(authorization)
        if not token:
            raise InvalidAccessTokenError("Access token is empty.")

        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= 100_000:
                self._verified.clear()
            self._verified[token] = claims

        self._check_lifetime(claims)
        if claims.get("aud") not in audiences:
            raise InvalidAccessTokenError("Invalid audience.")

        return claims

    def _decode(self, token: str) -> Mapping[str, Any]:
        # Lifetime and audience are checked afterwards, to send Graph's message for each.
        options: Options = {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": False,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=["HS256"], options=options
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as error:
            raise InvalidAccessTokenError("Invalid signature.") from error
        except jwt.InvalidTokenError as error:
            raise InvalidAccessTokenError(
                "CompactToken parsing failed with error code: 80049217"
            ) from error

        return claims

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        now = time.time()
        skew = self._settings.clock_skew_seconds
        not_before = claims.get("nbf")
        expires = claims.get("exp")
        if (
            not isinstance(not_before, int | float)
            or not isinstance(expires, int | float)
            or now < not_before - skew
            or now >= expires + skew
        ):
            raise InvalidAccessTokenError("Access token has expired or is not yet valid.")


def _bearer_token(authorization: str | None) -> str:
    if authorization is None:
        return ""

    scheme, _, token = authorization.strip().partition(" ")

    return token.strip() if scheme.lower() == "bearer" else ""
