"""Workload identity federation: a token from an external issuer, checked as Entra ID does.

An app registration can trust tokens from an external OpenID Connect issuer, such as a
Kubernetes cluster's service-account issuer, through federated identity credentials. Each one
names an issuer, a subject and the accepted audiences. A pod sends its projected
service-account token as the client assertion. Entra picks the credential whose issuer,
subject and audience match the token's claims, checks the signature with the issuer's signing
key, then checks the token's lifetime.

The emulator reads the issuer's key from a file named in the scenario instead of fetching the
issuer's JWKS document, so no test depends on a real issuer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.types import Options

from batchsync.emulator.assertions import InvalidClientAssertionError, check_assertion_lifetime

__all__ = [
    "TOKEN_EXCHANGE_AUDIENCE",
    "FederatedIdentityCredential",
    "load_issuer_key",
    "verify_federated_assertion",
]

# The audience Entra ID recommends for federated identity credentials, and the one the Azure
# Workload Identity webhook requests for the projected token.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret

_SIGNATURE_ONLY: Options = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
}


def load_issuer_key(path: Path) -> RSAPublicKey:
    """Read an issuer's RS256 signing key from a PEM public key or PEM certificate.

    Raises:
        ValueError: the file is neither a PEM public key nor a PEM certificate.
        TypeError: the key is not an RSA key.
    """
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, RSAPublicKey):
        raise TypeError(f"the key is a {type(key).__name__}; the issuer must sign with RS256")

    return key


@dataclass(frozen=True, slots=True)
class FederatedIdentityCredential:
    """One trusted issuer and subject of an app, with the issuer's signing key."""

    issuer: str
    subject: str
    audiences: frozenset[str]
    public_key: RSAPublicKey


def verify_federated_assertion(
    assertion: str, credentials: Iterable[FederatedIdentityCredential], skew_seconds: int
) -> Mapping[str, Any]:
    """Check a client assertion issued by an external issuer and return its claims.

    Issuer and subject match case-sensitively, as Entra ID matches them since February 2025.

    Raises:
        InvalidClientAssertionError: AADSTS50027 for a token that is not a JWT, AADSTS70021
            (400 ``invalid_request``) when no credential matches the issuer, subject and
            audience, AADSTS700027 for a bad signature, AADSTS700024 outside the lifetime.
    """
    try:
        claims: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as error:
        raise InvalidClientAssertionError(50027, "JWT token is invalid or malformed.") from error

    credential = _matching_credential(claims, credentials)
    _check_signature(assertion, credential)
    check_assertion_lifetime(claims, skew_seconds)

    return claims


def _matching_credential(
    claims: Mapping[str, Any], credentials: Iterable[FederatedIdentityCredential]
) -> FederatedIdentityCredential:
    issuer = claims.get("iss")
    subject = claims.get("sub")
    audiences = _audiences(claims.get("aud"))
    for credential in credentials:
        if (
            credential.issuer == issuer
            and credential.subject == subject
            and not credential.audiences.isdisjoint(audiences)
        ):
            return credential

    # NOTE: error reports from 2024 on show Entra ID naming the mismatched claim with
    # AADSTS700211 (issuer) or AADSTS700213 (subject) and invalid_client. The emulator sends
    # the older AADSTS70021, which Entra sent as 400 invalid_request in 2022.
    raise InvalidClientAssertionError(
        70021,
        "No matching federated identity record found for presented assertion. Assertion "
        f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
        f"'{','.join(sorted(audiences))}'. "
        "https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
        status=400,
        error="invalid_request",
    )


def _audiences(value: object) -> set[str]:
    """Return the ``aud`` claim as a set, which a JWT may give as one string or a list."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}

    return set()


def _check_signature(assertion: str, credential: FederatedIdentityCredential) -> None:
    try:
        jwt.decode(assertion, credential.public_key, algorithms=["RS256"], options=_SIGNATURE_ONLY)
    except jwt.InvalidTokenError as error:
        # NOTE: Entra's code for a federated token with a bad signature is not documented.
        # The emulator reuses the code for a certificate assertion with a bad signature.
        raise InvalidClientAssertionError(
            700027,
            "Client assertion failed signature validation. [Reason - The signature does not "
            f"match a signing key of issuer '{credential.issuer}'.]",
        ) from error
