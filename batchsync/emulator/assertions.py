"""Certificate credentials: checking a client assertion the way Entra ID does.

An app that signs in with a certificate sends a JWT signed with the certificate's private key
instead of a secret. Entra finds the registered certificate by the thumbprint in the JWT
header, checks the signature with the certificate's public key, then checks the claims.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.types import Options

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "InvalidClientAssertionError",
    "RegisteredCertificate",
    "check_assertion_lifetime",
    "is_signed_by_certificate",
    "verify_client_assertion",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# MSAL Python signs with PS256 when given the certificate (so it has the SHA-256
# thumbprint), and with RS256 when given only a SHA-1 thumbprint.
_ALGORITHMS = ["RS256", "PS256", "ES256"]
# PyJWT checks the signature only; the claims are checked afterwards, each with Entra's code.
_SIGNATURE_ONLY: Options = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
}


class InvalidClientAssertionError(Exception):
    """Entra rejected the client assertion; ``code`` is the AADSTS number.

    ``status`` and ``error`` are the HTTP status and OAuth error code of the response.
    """

    def __init__(
        self, code: int, message: str, *, status: int = 401, error: str = "invalid_client"
    ) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.error = error


@dataclass(frozen=True, slots=True)
class RegisteredCertificate:
    """Public half of a certificate registered on an app, with both thumbprints Entra matches."""

    public_key: RSAPublicKey | EllipticCurvePublicKey
    sha1_thumbprint: str
    sha256_thumbprint: str
    not_after: datetime

    @classmethod
    def load(cls, path: Path) -> RegisteredCertificate:
        """Read a PEM certificate file.

        Raises:
            ValueError: the file is not a PEM certificate.
            TypeError: the certificate's key is neither RSA nor EC.
        """
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        public_key = certificate.public_key()
        if not isinstance(public_key, RSAPublicKey | EllipticCurvePublicKey):
            raise TypeError(
                f"certificate {str(path)!r} has a {type(public_key).__name__}; Entra accepts "
                "only RSA and EC certificates"
            )
        # The x5t header is defined as the SHA-1 thumbprint, so SHA-1 is required here.
        sha1 = certificate.fingerprint(hashes.SHA1())  # noqa: S303

        return cls(
            public_key=public_key,
            sha1_thumbprint=_b64url(sha1),
            sha256_thumbprint=_b64url(certificate.fingerprint(hashes.SHA256())),
            not_after=certificate.not_valid_after_utc,
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def verify_client_assertion(
    assertion: str,
    client_id: str,
    certificates: Sequence[RegisteredCertificate],
    token_endpoints: Collection[str],
    skew_seconds: int,
) -> None:
    """Check a certificate-signed client assertion.

    The signing certificate is found by the ``x5t#S256`` or ``x5t`` header, or each one is
    tried when neither header is present. The claims must then have ``aud`` equal to a token
    endpoint URL, ``iss`` and ``sub`` equal to the client id, and a current ``exp`` and ``nbf``.

    Raises:
        InvalidClientAssertionError: names what failed, with Entra's AADSTS code.
    """
    header = _unverified_header(assertion)
    claims = _verified_claims(assertion, header, certificates)
    if claims.get("aud") not in token_endpoints:
        # NOTE: Entra's code for a wrong audience is not documented; 50027 is a guess.
        raise InvalidClientAssertionError(
            50027,
            "Invalid JWT token. The audience claim must be the token endpoint URL, such as "
            f"'{min(token_endpoints)}'.",
        )
    issuer = str(claims.get("iss", "")).lower()
    subject = str(claims.get("sub", "")).lower()
    if issuer != client_id or subject != client_id:
        raise InvalidClientAssertionError(
            700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    check_assertion_lifetime(claims, skew_seconds)


def is_signed_by_certificate(assertion: str, certificates: Sequence[RegisteredCertificate]) -> bool:
    """Return whether one of ``certificates`` signed ``assertion``, expired or not.

    Claims are not checked, and a malformed assertion returns False.
    """
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        return False

    candidates = _candidate_certificates(header, certificates)

    return any(_signed_claims(assertion, cert) is not None for cert in candidates)


def _unverified_header(assertion: str) -> Mapping[str, Any]:
    try:
        return jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as error:
        raise InvalidClientAssertionError(50027, "JWT token is invalid or malformed.") from error


def _verified_claims(
    assertion: str, header: Mapping[str, Any], certificates: Sequence[RegisteredCertificate]
) -> Mapping[str, Any]:
    candidates = _candidate_certificates(header, certificates)
    if not candidates:
        thumbprint = header.get("x5t#S256") or header.get("x5t") or "none"
        raise InvalidClientAssertionError(
            700027,
            "The certificate with identifier used to sign the client assertion is not "
            "registered on application. [Reason - The key was not found., Thumbprint of key "
            f"used by client: '{thumbprint}']",
        )

    for certificate in candidates:
        if certificate.not_after < datetime.now(UTC):
            raise InvalidClientAssertionError(
                700027,
                "Client assertion contains an invalid signature. [Reason - The key used is "
                "expired.]",
            )
        claims = _signed_claims(assertion, certificate)
        if claims is not None:
            return claims

    raise InvalidClientAssertionError(
        700027, "Client assertion failed signature validation. [Reason - Signature is invalid.]"
    )


def _signed_claims(assertion: str, certificate: RegisteredCertificate) -> Mapping[str, Any] | None:
    """Return the claims if ``certificate`` signed ``assertion``, else None."""
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion, certificate.public_key, algorithms=_ALGORITHMS, options=_SIGNATURE_ONLY
        )
    except jwt.InvalidTokenError:
        return None

    return claims


def _candidate_certificates(
    header: Mapping[str, Any], certificates: Sequence[RegisteredCertificate]
) -> list[RegisteredCertificate]:
    # MSAL Python 1.39 pads its base64url thumbprints with "=", which RFC 7515 leaves out, so
    # matching ignores padding.
    if "x5t#S256" in header:
        thumbprint = str(header["x5t#S256"]).rstrip("=")
        return [cert for cert in certificates if cert.sha256_thumbprint == thumbprint]
    if "x5t" in header:
        thumbprint = str(header["x5t"]).rstrip("=")
        return [cert for cert in certificates if cert.sha1_thumbprint == thumbprint]

    return list(certificates)


def check_assertion_lifetime(claims: Mapping[str, Any], skew_seconds: int) -> None:
    """Check an assertion's ``exp`` and ``nbf`` against the clock, allowing ``skew_seconds``.

    Raises:
        InvalidClientAssertionError: AADSTS50027 without ``exp``, AADSTS700024 outside the
            valid time range.
    """
    now = time.time()
    expires = claims.get("exp")
    not_before = claims.get("nbf", 0)
    if not isinstance(expires, int | float) or not isinstance(not_before, int | float):
        raise InvalidClientAssertionError(
            50027, "JWT token is invalid or malformed. The 'exp' claim is missing."
        )
    if now >= expires + skew_seconds or now < not_before - skew_seconds:
        raise InvalidClientAssertionError(
            700024,
            f"Client assertion is not within its valid time range. Current time: "
            f"{_iso(now)}, assertion valid from {_iso(not_before)}, expiry time of assertion "
            f"{_iso(expires)}.",
        )


def _iso(epoch_seconds: float) -> str:
    # Entra prints seven fractional digits, as .NET's round-trip format does.
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
