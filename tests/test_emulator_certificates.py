"""Tests of certificate credentials: client assertions checked as Entra checks them."""

from __future__ import annotations

import base64
import datetime
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from batchsync.emulator import Emulator
from batchsync.emulator.assertions import CLIENT_ASSERTION_TYPE
from tests import emulator_helpers
from tests.emulator_helpers import (
    CLIENT_ID,
    TENANT_ID,
    GraphClient,
    StartEmulator,
    acquire_token,
    decode_unverified,
)

# pytest looks for fixtures in the test module's namespace.
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator

TOKEN_PATH = f"/{TENANT_ID}/oauth2/v2.0/token"


@dataclass(frozen=True)
class KeyPair:
    """A private key and a self-signed certificate for it, as PEM text."""

    private_key_pem: str
    certificate_pem: str
    sha1_hex: str
    sha1_b64url: str

    def write_certificate(self, directory: Path, name: str) -> Path:
        """Write the certificate PEM into ``directory`` and return its path."""
        path = directory / name
        path.write_text(self.certificate_pem, encoding="ascii")

        return path


def make_key_pair(days_valid: int = 30) -> KeyPair:
    """Generate an RSA key and a certificate valid for ``days_valid`` days (negative: expired)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchsync emulator test app")])
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days_valid)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    sha1 = certificate.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is SHA-1 by definition

    return KeyPair(
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        sha1_hex=sha1.hex(),
        sha1_b64url=base64.urlsafe_b64encode(sha1).rstrip(b"=").decode("ascii"),
    )


@pytest.fixture(name="registered", scope="module")
def fixture_registered() -> KeyPair:
    """Return the key pair whose certificate the app registers."""
    return make_key_pair()


@pytest.fixture(name="stranger", scope="module")
def fixture_stranger() -> KeyPair:
    """Return a key pair the app does not register."""
    return make_key_pair()


async def certificate_emulator(
    new_emulator: StartEmulator, tmp_path: Path, *certificates: KeyPair
) -> Emulator:
    """Start an emulator whose app signs in with ``certificates`` only."""
    paths = [
        str(pair.write_certificate(tmp_path, f"cert-{index}.pem"))
        for index, pair in enumerate(certificates)
    ]
    app = {
        "client_id": CLIENT_ID,
        "tenant": TENANT_ID,
        "certificates": paths,
        "permissions": ["Synchronization.ReadWrite.All"],
    }

    return await new_emulator(apps=[app])


def assertion(
    emulator: Emulator, pair: KeyPair, *, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    """Sign a client assertion with ``pair``'s key; ``claims`` replace the valid defaults."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "aud": f"{emulator.login_url}/{TENANT_ID}/oauth2/v2.0/token",
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "exp": now + 600,
    }
    payload.update(claims)
    headers = {"x5t": pair.sha1_b64url} if header is None else header

    return jwt.encode(payload, pair.private_key_pem, algorithm="RS256", headers=headers)


async def post_assertion(
    emulator: Emulator, http: aiohttp.ClientSession, signed: str
) -> emulator_helpers.CapturedResponse:
    """Send a client credentials request carrying ``signed`` as the client assertion."""
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": signed,
        "scope": f"{emulator.graph_url}/.default",
    }

    return await GraphClient(emulator, http, "").post_form(TOKEN_PATH, form)


class TestCertificateThroughMsal:
    """MSAL's own client assertions."""

    async def test_public_certificate_ps256(
        self, new_emulator: StartEmulator, tmp_path: Path, registered: KeyPair
    ) -> None:
        """MSAL given the certificate signs with PS256 and x5t#S256, which is accepted."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        credential = {
            "private_key": registered.private_key_pem,
            "public_certificate": registered.certificate_pem,
        }
        result = await acquire_token(emulator, credential=credential)

        assert result["token_type"] == "Bearer"
        assert decode_unverified(result["access_token"])["appidacr"] == "2"

    async def test_thumbprint_rs256(
        self, new_emulator: StartEmulator, tmp_path: Path, registered: KeyPair
    ) -> None:
        """MSAL given a SHA-1 thumbprint signs with RS256 and x5t, which is accepted."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        credential = {"private_key": registered.private_key_pem, "thumbprint": registered.sha1_hex}
        result = await acquire_token(emulator, credential=credential)

        assert result["token_type"] == "Bearer"

    async def test_unregistered_certificate(
        self, new_emulator: StartEmulator, tmp_path: Path, registered: KeyPair, stranger: KeyPair
    ) -> None:
        """A certificate the app does not register gets AADSTS700027 naming the thumbprint."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        credential = {"private_key": stranger.private_key_pem, "thumbprint": stranger.sha1_hex}
        result = await acquire_token(emulator, credential=credential)

        assert result["error"] == "invalid_client"
        assert result["error_codes"] == [700027]
        assert "not registered on application" in result["error_description"]
        assert stranger.sha1_b64url in result["error_description"]

    async def test_second_certificate(
        self, new_emulator: StartEmulator, tmp_path: Path, registered: KeyPair, stranger: KeyPair
    ) -> None:
        """Any registered certificate works, not only the first."""
        emulator = await certificate_emulator(new_emulator, tmp_path, stranger, registered)
        credential = {"private_key": registered.private_key_pem, "thumbprint": registered.sha1_hex}
        result = await acquire_token(emulator, credential=credential)

        assert "access_token" in result


class TestClientAssertionChecks:
    """Hand-made assertions that break one rule each."""

    async def test_valid_assertion(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
    ) -> None:
        """A correct RS256 assertion gets a token."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        response = await post_assertion(emulator, http, assertion(emulator, registered))

        assert response.status == 200

    async def test_audience_by_domain(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
    ) -> None:
        """An audience naming the tenant's domain endpoint is rejected when posted by GUID."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        signed = assertion(
            emulator, registered, aud=f"{emulator.login_url}/contoso.example/oauth2/v2.0/token"
        )
        response = await post_assertion(emulator, http, signed)

        assert response.status == 401
        assert response.json()["error_codes"] == [50027]

    async def test_signature_mismatch(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
        stranger: KeyPair,
    ) -> None:
        """An assertion naming the registered thumbprint but signed by another key fails."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        signed = assertion(emulator, stranger, header={"x5t": registered.sha1_b64url})
        response = await post_assertion(emulator, http, signed)

        assert response.status == 401
        assert response.json()["error_codes"] == [700027]
        assert "Signature is invalid" in response.json()["error_description"]

    async def test_no_thumbprint_header(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
    ) -> None:
        """Without x5t, every registered certificate is tried."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        response = await post_assertion(emulator, http, assertion(emulator, registered, header={}))

        assert response.status == 200

    @pytest.mark.parametrize(
        ("claims", "code"),
        [
            ({"aud": "https://login.microsoftonline.com/common/oauth2/v2.0/token"}, 50027),
            ({"iss": "00000000-0000-4000-8000-000000000001"}, 700021),
            ({"sub": "00000000-0000-4000-8000-000000000001"}, 700021),
            ({"exp": int(time.time()) - 3600}, 700024),
            ({"nbf": int(time.time()) + 3600}, 700024),
        ],
    )
    async def test_invalid_claims(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
        claims: dict[str, Any],
        code: int,
    ) -> None:
        """A wrong audience, issuer, subject or lifetime gets 401 invalid_client."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        response = await post_assertion(emulator, http, assertion(emulator, registered, **claims))

        assert response.status == 401
        assert response.json()["error"] == "invalid_client"
        assert response.json()["error_codes"] == [code]

    async def test_malformed_assertion(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        registered: KeyPair,
    ) -> None:
        """An assertion that is not a JWT gets AADSTS50027."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        response = await post_assertion(emulator, http, "not-a-jwt")

        assert response.status == 401
        assert response.json()["error_codes"] == [50027]

    async def test_expired_certificate(
        self, new_emulator: StartEmulator, tmp_path: Path, http: aiohttp.ClientSession
    ) -> None:
        """A registered certificate past its end date no longer signs in."""
        expired = make_key_pair(days_valid=-1)
        emulator = await certificate_emulator(new_emulator, tmp_path, expired)
        response = await post_assertion(emulator, http, assertion(emulator, expired))

        assert response.status == 401
        assert "The key used is expired" in response.json()["error_description"]

    async def test_secret_rejected_for_certificate_app(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        registered: KeyPair,
    ) -> None:
        """An app with only certificates rejects any client secret."""
        emulator = await certificate_emulator(new_emulator, tmp_path, registered)
        result = await acquire_token(emulator, credential="a-guess")

        assert result["error_codes"] == [7000215]
