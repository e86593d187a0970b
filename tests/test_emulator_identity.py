"""Tests of the emulator's workload identity federation and App Service managed identity."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msal
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from batchsync.emulator import Emulator, load_scenario
from batchsync.emulator.assertions import CLIENT_ASSERTION_TYPE
from batchsync.emulator.cli import describe
from batchsync.emulator.federation import TOKEN_EXCHANGE_AUDIENCE
from tests import emulator_helpers
from tests.emulator_helpers import (
    CLIENT_ID,
    OBJECT_ID,
    SYNC_ROLE,
    TENANT_ID,
    CABundleSession,
    CapturedResponse,
    GraphClient,
    StartEmulator,
    acquire_token,
    client_ssl_context,
    decode_unverified,
    scenario_data,
)
from tests.test_emulator_certificates import KeyPair, make_key_pair

# pytest looks for fixtures in the test module's namespace.
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator

TOKEN_PATH = f"/{TENANT_ID}/oauth2/v2.0/token"
SHIPPED_SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "emulator" / "identity.yaml"
ISSUER = "https://oidc.cluster.example/7f3c2a10-4b5d-4e6f-8a9b-0c1d2e3f4a5b/"
SUBJECT = "system:serviceaccount:provisioning:batchsync"
IDENTITY_HEADER = "canary-identity-header-Xw83Lq"
SYSTEM_IDENTITY = "a1b2c3d4-0000-4000-8000-00000000aaaa"
USER_IDENTITY = "a1b2c3d4-0000-4000-8000-00000000bbbb"
UNROLED_IDENTITY = "a1b2c3d4-0000-4000-8000-00000000cccc"


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """Return ``key`` as unencrypted PKCS#8 PEM text."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """Return the public half of ``key`` as PEM text."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@pytest.fixture(name="issuer_key", scope="module")
def fixture_issuer_key() -> rsa.RSAPrivateKey:
    """Return the RSA key the emulated cluster's service-account issuer signs with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(name="other_key", scope="module")
def fixture_other_key() -> rsa.RSAPrivateKey:
    """Return an RSA key that no federated credential trusts."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    """Sign a Kubernetes-style service-account token; ``claims`` replace the valid defaults."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": [TOKEN_EXCHANGE_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)

    return jwt.encode(payload, private_pem(key), algorithm="RS256", headers={"kid": "cluster-1"})


def federated_app(key_path: Path, **extra: Any) -> dict[str, Any]:
    """Return an app registration that trusts ISSUER and SUBJECT, signed by ``key_path``."""
    credential = {"issuer": ISSUER, "subject": SUBJECT, "public_key": str(key_path)}

    return {
        "client_id": CLIENT_ID,
        "tenant": TENANT_ID,
        "federated_credentials": [credential],
        "permissions": [SYNC_ROLE],
        **extra,
    }


async def federated_emulator(
    new_emulator: StartEmulator, tmp_path: Path, key: rsa.RSAPrivateKey, **extra: Any
) -> Emulator:
    """Start an emulator whose app trusts tokens that ``key`` signs for SUBJECT."""
    key_path = tmp_path / "issuer-key.pem"
    key_path.write_text(public_pem(key), encoding="ascii")

    return await new_emulator(apps=[federated_app(key_path, **extra)])


async def post_assertion(
    emulator: Emulator, http: aiohttp.ClientSession, assertion: str
) -> CapturedResponse:
    """Send a client credentials request carrying ``assertion`` as the client assertion."""
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": f"{emulator.graph_url}/.default",
    }

    return await GraphClient(emulator, http, "").post_form(TOKEN_PATH, form)


MANAGED_IDENTITIES = [
    {
        "client_id": SYSTEM_IDENTITY,
        "tenant": TENANT_ID,
        "system_assigned": True,
        "permissions": [SYNC_ROLE],
    },
    {"client_id": USER_IDENTITY, "tenant": TENANT_ID, "permissions": [SYNC_ROLE]},
    {"client_id": UNROLED_IDENTITY, "tenant": TENANT_ID},
]


async def identity_emulator(
    new_emulator: StartEmulator, identities: list[dict[str, Any]] | None = None
) -> Emulator:
    """Start an emulator that serves the managed identity endpoint for ``identities``."""
    return await new_emulator(
        managed_identity={"identity_header": IDENTITY_HEADER},
        managed_identities=MANAGED_IDENTITIES if identities is None else identities,
    )


async def get_identity_token(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    *,
    header: str | None = IDENTITY_HEADER,
    path: str = "/msi/token",
    **params: str,
) -> CapturedResponse:
    """Call the managed identity endpoint as App Service code does; ``header=None`` omits it."""
    query = {"api-version": "2019-08-01", "resource": emulator.graph_url, **params}
    query = {name: value for name, value in query.items() if value != ""}
    headers = {} if header is None else {"X-IDENTITY-HEADER": header}
    async with http.get(
        f"{emulator.url}{path}", params=query, headers=headers, ssl=client_ssl_context(emulator)
    ) as response:
        return CapturedResponse(response.status, response.headers, await response.read())


def sha256_hex(text: str) -> str:
    """Return the hex SHA-256 digest of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


class TestFederatedCredentialScenario:
    """federated_credentials in scenario files."""

    def test_relative_public_key(self, tmp_path: Path, issuer_key: rsa.RSAPrivateKey) -> None:
        """A relative public_key path is resolved against the scenario file's directory."""
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "issuer.pem").write_text(public_pem(issuer_key), encoding="ascii")
        data = scenario_data(apps=[federated_app(Path("keys/issuer.pem"))])
        path = tmp_path / "scenario.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")

        credential = load_scenario(path).apps[0].federated_credentials[0]

        assert credential.public_key == tmp_path / "keys" / "issuer.pem"
        assert credential.audiences == [TOKEN_EXCHANGE_AUDIENCE]

    def test_certificate_as_key(self, tmp_path: Path) -> None:
        """A PEM certificate of the issuer's key is accepted in place of the public key."""
        pair = make_key_pair()
        key_path = pair.write_certificate(tmp_path, "issuer-cert.pem")

        scenario = emulator_helpers.make_scenario(apps=[federated_app(key_path)])

        assert scenario.apps[0].federated_credentials[0].public_key == key_path

    def test_missing_key_file(self, tmp_path: Path) -> None:
        """A public key path that does not exist is reported with its resolved path."""
        with pytest.raises(ValueError, match=r"public key file .*absent\.pem' does not exist"):
            emulator_helpers.make_scenario(apps=[federated_app(tmp_path / "absent.pem")])

    def test_ec_key_rejected(self, tmp_path: Path) -> None:
        """An EC key is rejected, because the issuer must sign with RS256."""
        key_path = tmp_path / "ec.pem"
        key_path.write_text(public_pem(ec.generate_private_key(ec.SECP256R1())), encoding="ascii")

        with pytest.raises(ValueError, match="must sign with RS256"):
            emulator_helpers.make_scenario(apps=[federated_app(key_path)])

    def test_duplicate_issuer_subject(self, tmp_path: Path, issuer_key: rsa.RSAPrivateKey) -> None:
        """Two credentials with one issuer and subject on an app are rejected."""
        key_path = tmp_path / "issuer.pem"
        key_path.write_text(public_pem(issuer_key), encoding="ascii")
        app = federated_app(key_path)
        app["federated_credentials"] *= 2

        with pytest.raises(ValueError, match=r"issuer and subject .* appears more than once"):
            emulator_helpers.make_scenario(apps=[app])

    def test_empty_audiences(self, tmp_path: Path, issuer_key: rsa.RSAPrivateKey) -> None:
        """A credential with no audience is rejected."""
        key_path = tmp_path / "issuer.pem"
        key_path.write_text(public_pem(issuer_key), encoding="ascii")
        app = federated_app(key_path)
        app["federated_credentials"][0]["audiences"] = []

        with pytest.raises(ValueError, match="audiences"):
            emulator_helpers.make_scenario(apps=[app])


class TestFederatedToken:
    """Token requests whose client assertion is a service-account token."""

    async def test_msal_signs_in(
        self, new_emulator: StartEmulator, tmp_path: Path, issuer_key: rsa.RSAPrivateKey
    ) -> None:
        """MSAL with a client_assertion callable gets a token carrying the app's id and roles."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key)
        result = await acquire_token(emulator, credential={"client_assertion": lambda: assertion})
        claims = decode_unverified(result["access_token"])

        assert claims["appid"] == CLIENT_ID
        assert claims["appidacr"] == "2"
        assert claims["roles"] == [SYNC_ROLE]
        assert claims["aud"] == emulator.graph_url

    async def test_records_digest_only(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """The call record stores the assertion's SHA-256 digest and client id, not the token."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key)
        await post_assertion(emulator, http, assertion)
        record = emulator.calls[-1]

        assert record.endpoint == "token"
        assert record.assertion_sha256 == sha256_hex(assertion)
        assert record.client_id == CLIENT_ID
        assert assertion not in repr(record)

    async def test_audience_as_string(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """An aud claim given as one string instead of a list is accepted."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key, aud=TOKEN_EXCHANGE_AUDIENCE)
        response = await post_assertion(emulator, http, assertion)

        assert response.status == 200

    @pytest.mark.parametrize(
        ("claims", "named"),
        [
            ({"iss": "https://oidc.other.example/"}, "Assertion Issuer: 'https://oidc.other.example/'"),
            ({"iss": ISSUER.upper()}, f"Assertion Issuer: '{ISSUER.upper()}'"),
            ({"sub": "system:serviceaccount:default:other"}, "Assertion Subject: 'system:serviceaccount:default:other'"),
            ({"sub": SUBJECT.upper()}, f"Assertion Subject: '{SUBJECT.upper()}'"),
            ({"aud": ["api://SomethingElse"]}, "Assertion Audience: 'api://SomethingElse'"),
            ({"aud": None}, "Assertion Audience: ''"),
        ],
        ids=["issuer", "issuer-case", "subject", "subject-case", "audience", "no-audience"],
    )  # fmt: skip
    async def test_no_matching_record(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
        claims: dict[str, Any],
        named: str,
    ) -> None:
        """A wrong issuer, subject or audience gets 400 AADSTS70021 naming the claims sent."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key, **claims)
        response = await post_assertion(emulator, http, assertion)
        body = response.json()

        assert response.status == 400
        assert body["error"] == "invalid_request"
        assert body["error_codes"] == [70021]
        assert "No matching federated identity record found" in body["error_description"]
        assert named in body["error_description"]
        assert assertion not in response.body.decode()

    async def test_expired_token(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """An expired service-account token gets 401 AADSTS700024 with the times."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        past = int(time.time()) - 7200
        assertion = service_account_token(issuer_key, iat=past, nbf=past, exp=past + 3600)
        response = await post_assertion(emulator, http, assertion)
        body = response.json()

        assert response.status == 401
        assert body["error"] == "invalid_client"
        assert body["error_codes"] == [700024]
        assert "expiry time of assertion" in body["error_description"]

    async def test_skew_allows_recent_expiry(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """A token expired less than the clock skew ago is still accepted."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key, exp=int(time.time()) - 60)
        response = await post_assertion(emulator, http, assertion)

        assert response.status == 200

    async def test_missing_expiry(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """A token without exp gets AADSTS50027."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        assertion = service_account_token(issuer_key, exp=None)
        response = await post_assertion(emulator, http, assertion)

        assert response.status == 401
        assert response.json()["error_codes"] == [50027]

    async def test_untrusted_signature(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
        other_key: rsa.RSAPrivateKey,
    ) -> None:
        """A token with the right claims but signed by another key gets AADSTS700027."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        response = await post_assertion(emulator, http, service_account_token(other_key))
        body = response.json()

        assert response.status == 401
        assert body["error"] == "invalid_client"
        assert body["error_codes"] == [700027]
        assert ISSUER in body["error_description"]

    async def test_unsigned_token(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """A token with alg none is rejected even though its claims match."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": SUBJECT, "aud": TOKEN_EXCHANGE_AUDIENCE, "exp": now + 600}
        response = await post_assertion(emulator, http, jwt.encode(claims, "", algorithm="none"))

        assert response.status == 401
        assert response.json()["error_codes"] == [700027]

    async def test_not_a_jwt(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """An assertion that is not a JWT gets AADSTS50027."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        response = await post_assertion(emulator, http, "not-a-jwt")

        assert response.status == 401
        assert response.json()["error_codes"] == [50027]

    async def test_certificate_still_accepted(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """An app with both a certificate and a federated credential accepts either."""
        pair: KeyPair = make_key_pair()
        certificate = pair.write_certificate(tmp_path, "app.pem")
        emulator = await federated_emulator(
            new_emulator, tmp_path, issuer_key, certificates=[str(certificate)]
        )
        credential = {"private_key": pair.private_key_pem, "thumbprint": pair.sha1_hex}
        by_certificate = await acquire_token(emulator, credential=credential)
        assertion = service_account_token(issuer_key)
        by_federation = await acquire_token(
            emulator, credential={"client_assertion": lambda: assertion}
        )

        assert "access_token" in by_certificate
        assert "access_token" in by_federation

    async def test_certificate_errors_unchanged(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """A certificate assertion with a wrong subject still gets AADSTS700021."""
        pair = make_key_pair()
        certificate = pair.write_certificate(tmp_path, "app.pem")
        emulator = await federated_emulator(
            new_emulator, tmp_path, issuer_key, certificates=[str(certificate)]
        )
        now = int(time.time())
        claims = {
            "aud": f"{emulator.login_url}{TOKEN_PATH}",
            "iss": CLIENT_ID,
            "sub": "00000000-0000-4000-8000-000000000001",
            "nbf": now,
            "exp": now + 600,
        }
        signed = jwt.encode(
            claims, pair.private_key_pem, algorithm="RS256", headers={"x5t": pair.sha1_b64url}
        )
        response = await post_assertion(emulator, http, signed)

        assert response.status == 401
        assert response.json()["error_codes"] == [700021]

    async def test_graph_accepts_token(
        self,
        new_emulator: StartEmulator,
        tmp_path: Path,
        http: aiohttp.ClientSession,
        issuer_key: rsa.RSAPrivateKey,
    ) -> None:
        """Graph accepts the access token that a federated sign-in returns."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        response = await post_assertion(emulator, http, service_account_token(issuer_key))
        graph = GraphClient(emulator, http, response.json()["access_token"])

        assert (await graph.acquire()).status == 204


class TestManagedIdentityScenario:
    """managed_identity and managed_identities in scenario files."""

    def test_identities_need_header(self) -> None:
        """Managed identities without the endpoint's identity header are rejected."""
        with pytest.raises(ValueError, match=r"needs managed_identity\.identity_header"):
            emulator_helpers.make_scenario(managed_identities=MANAGED_IDENTITIES)

    def test_one_system_assigned(self) -> None:
        """Two system-assigned identities are rejected."""
        identities = [
            {"client_id": SYSTEM_IDENTITY, "tenant": TENANT_ID, "system_assigned": True},
            {"client_id": USER_IDENTITY, "tenant": TENANT_ID, "system_assigned": True},
        ]

        with pytest.raises(ValueError, match="at most one system-assigned identity"):
            emulator_helpers.make_scenario(
                managed_identity={"identity_header": IDENTITY_HEADER},
                managed_identities=identities,
            )

    def test_client_id_shared_with_app(self) -> None:
        """A managed identity cannot reuse an app's client id."""
        identities = [{"client_id": CLIENT_ID, "tenant": TENANT_ID}]

        with pytest.raises(ValueError, match="appears more than once"):
            emulator_helpers.make_scenario(
                managed_identity={"identity_header": IDENTITY_HEADER},
                managed_identities=identities,
            )

    def test_unknown_tenant(self) -> None:
        """A managed identity in a tenant that is not listed is rejected."""
        other = "00000000-0000-4000-8000-000000000001"
        identities = [{"client_id": USER_IDENTITY, "tenant": other}]

        with pytest.raises(ValueError, match=r"managed_identities\[0\]\.tenant"):
            emulator_helpers.make_scenario(
                managed_identity={"identity_header": IDENTITY_HEADER},
                managed_identities=identities,
            )

    def test_header_not_echoed(self, tmp_path: Path) -> None:
        """An invalid identity_header is reported without its value."""
        data = scenario_data(managed_identity={"identity_header": 918273645})
        path = tmp_path / "scenario.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")

        with pytest.raises(ValueError, match=r"managed_identity\.identity_header") as error:
            load_scenario(path)

        assert "918273645" not in str(error.value)


class TestManagedIdentityEndpoint:
    """GET /msi/token as App Service serves it."""

    async def test_system_assigned(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Without client_id, the system-assigned identity gets a token in App Service's shape."""
        emulator = await identity_emulator(new_emulator)
        before = int(time.time())
        response = await get_identity_token(emulator, http)
        body = response.json()
        claims = decode_unverified(body["access_token"])

        assert response.status == 200
        assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
        assert body["token_type"] == "Bearer"
        assert body["resource"] == emulator.graph_url
        assert body["client_id"] == SYSTEM_IDENTITY
        assert isinstance(body["expires_on"], str)
        assert int(body["expires_on"]) >= before + 3600
        assert claims["appid"] == SYSTEM_IDENTITY
        assert claims["aud"] == emulator.graph_url
        assert claims["roles"] == [SYNC_ROLE]
        assert claims["tid"] == TENANT_ID

    async def test_user_assigned(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """client_id selects a user-assigned identity, in any letter case."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, client_id=USER_IDENTITY.upper())
        body = response.json()

        assert response.status == 200
        assert body["client_id"] == USER_IDENTITY
        assert decode_unverified(body["access_token"])["appid"] == USER_IDENTITY

    async def test_call_recorded(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Each request is recorded as a managed_identity call naming the identity."""
        emulator = await identity_emulator(new_emulator)
        await get_identity_token(emulator, http, client_id=USER_IDENTITY)
        await get_identity_token(emulator, http, header="wrong")
        success, failure = emulator.calls

        assert success.endpoint == "managed_identity"
        assert success.status == 200
        assert success.client_id == USER_IDENTITY
        assert failure.endpoint == "managed_identity"
        assert failure.status == 401
        assert failure.client_id is None

    async def test_app_service_path(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """The /MSI/token/ spelling that App Service puts in IDENTITY_ENDPOINT is served too."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, path="/MSI/token/")

        assert response.status == 200

    @pytest.mark.parametrize(
        ("header", "status"),
        [(None, 400), ("", 400), ("wrong-header-value", 401), (IDENTITY_HEADER.upper(), 401)],
        ids=["missing", "empty", "wrong", "case"],
    )
    async def test_identity_header_checked(
        self,
        new_emulator: StartEmulator,
        http: aiohttp.ClientSession,
        header: str | None,
        status: int,
    ) -> None:
        """A missing header gets 400 and a wrong one 401, as plain JSON without a token."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, header=header)
        body = response.json()

        assert response.status == status
        assert body["statusCode"] == status
        assert "X-IDENTITY-HEADER" in body["message"]
        assert "access_token" not in body
        assert IDENTITY_HEADER not in response.body.decode()
        assert emulator.issued_tokens == []

    @pytest.mark.parametrize(
        "params",
        [
            {"client_id": "a1b2c3d4-0000-4000-8000-00000000dddd"},
            {"client_id": SYSTEM_IDENTITY},
            {"object_id": "a1b2c3d4-0000-4000-8000-00000000eeee"},
        ],
        ids=["unknown", "system-by-client-id", "object-id"],
    )
    async def test_identity_not_assigned(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession, params: dict[str, str]
    ) -> None:
        """An identity that is not a user-assigned one gets 400."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, **params)

        assert response.status == 400
        assert response.json()["message"] == "Unable to load the proper Managed Identity."

    async def test_no_system_assigned(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """Without client_id and without a system-assigned identity, the request gets 400."""
        identities = [{"client_id": USER_IDENTITY, "tenant": TENANT_ID}]
        emulator = await identity_emulator(new_emulator, identities)
        response = await get_identity_token(emulator, http)

        assert response.status == 400
        assert response.json()["statusCode"] == 400

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"api-version": ""}, "api-version"),
            ({"api-version": "2017-09-01"}, "2017-09-01"),
            ({"resource": ""}, "resource"),
        ],
        ids=["no-version", "old-version", "no-resource"],
    )
    async def test_query_checked(
        self,
        new_emulator: StartEmulator,
        http: aiohttp.ClientSession,
        params: dict[str, str],
        named: str,
    ) -> None:
        """A missing or unsupported api-version and a missing resource get 400."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, **params)

        assert response.status == 400
        assert named in response.json()["message"]

    async def test_not_served_without_section(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A scenario without managed_identity has no endpoint: 404, recorded as such."""
        emulator = await new_emulator()
        response = await get_identity_token(emulator, http)

        assert response.status == 404
        assert emulator.calls[-1].endpoint == "managed_identity"


class TestManagedIdentityTokenAtGraph:
    """Graph's view of managed identity tokens."""

    async def test_graph_resource_accepted(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A token for the emulator's Graph URL is accepted by Graph."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, client_id=USER_IDENTITY)
        graph = GraphClient(emulator, http, response.json()["access_token"])

        assert (await graph.acquire(OBJECT_ID)).status == 204

    async def test_other_resource_rejected(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """A token for another resource is rejected with Graph's invalid audience error."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, resource="https://graph.microsoft.com")
        graph = GraphClient(emulator, http, response.json()["access_token"])
        rejected = await graph.acquire(OBJECT_ID)

        assert rejected.status == 401
        assert rejected.error["code"] == "InvalidAuthenticationToken"
        assert rejected.error["message"] == "Invalid audience."

    async def test_identity_without_role(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """An identity without a synchronization permission gets Graph's 401 UnknownError."""
        emulator = await identity_emulator(new_emulator)
        response = await get_identity_token(emulator, http, client_id=UNROLED_IDENTITY)
        graph = GraphClient(emulator, http, response.json()["access_token"])
        rejected = await graph.acquire(OBJECT_ID)

        assert rejected.status == 401
        assert rejected.error["code"] == "UnknownError"


class TestManagedIdentityThroughMsal:
    """MSAL's ManagedIdentityClient against the endpoint, with App Service's variables set."""

    @staticmethod
    async def acquire(emulator: Emulator, identity: Mapping[str, Any]) -> dict[str, Any]:
        """Run ManagedIdentityClient.acquire_token_for_client for the emulator's Graph."""

        def run() -> dict[str, Any]:
            with CABundleSession(emulator.ca_path) as http_client:
                client = msal.ManagedIdentityClient(identity, http_client=http_client)
                result: dict[str, Any] = client.acquire_token_for_client(
                    resource=emulator.graph_url
                )
                return result

        return await asyncio.to_thread(run)

    async def test_system_assigned(
        self, new_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MSAL's system-assigned request gets the system identity's token."""
        emulator = await identity_emulator(new_emulator)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        result = await self.acquire(emulator, msal.SystemAssignedManagedIdentity())

        assert decode_unverified(result["access_token"])["appid"] == SYSTEM_IDENTITY
        assert emulator.calls[-1].endpoint == "managed_identity"

    async def test_user_assigned(
        self, new_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MSAL's user-assigned request names the client id and gets that identity's token."""
        emulator = await identity_emulator(new_emulator)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        identity = msal.UserAssignedManagedIdentity(client_id=USER_IDENTITY)
        result = await self.acquire(emulator, identity)

        assert decode_unverified(result["access_token"])["appid"] == USER_IDENTITY
        assert emulator.calls[-1].client_id == USER_IDENTITY

    async def test_wrong_header_error(
        self, new_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MSAL reports a wrong identity header as invalid_scope carrying status and message."""
        emulator = await identity_emulator(new_emulator)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
        result = await self.acquire(emulator, msal.SystemAssignedManagedIdentity())

        assert result["error"] == "invalid_scope"
        assert result["error_description"].startswith("401, ")


class TestShippedIdentityScenario:
    """configs/emulator/identity.yaml and what the emulator command prints for it."""

    async def test_serves_both_kinds(
        self, new_emulator: StartEmulator, http: aiohttp.ClientSession
    ) -> None:
        """The shipped file has a federated app, and its header gets tokens for both identities."""
        scenario = load_scenario(SHIPPED_SCENARIO)
        emulator = await new_emulator(scenario)
        header = "emulator-identity-header"
        system = await get_identity_token(emulator, http, header=header)
        user_id = scenario.managed_identities[1].client_id
        user = await get_identity_token(emulator, http, header=header, client_id=user_id)

        assert scenario.apps[1].federated_credentials[0].public_key.is_file()
        assert system.json()["client_id"] == scenario.managed_identities[0].client_id
        assert user.json()["client_id"] == user_id

    async def test_describe_names_endpoint(self, new_emulator: StartEmulator) -> None:
        """The start message gives IDENTITY_ENDPOINT and where the header is set, not its value."""
        emulator = await identity_emulator(new_emulator)
        text = describe(emulator, Path("scenario.yaml"))

        assert f"IDENTITY_ENDPOINT:     {emulator.url}/msi/token" in text
        assert "managed_identity.identity_header in scenario.yaml" in text
        assert IDENTITY_HEADER not in text

    async def test_describe_federated_app(
        self, new_emulator: StartEmulator, tmp_path: Path, issuer_key: rsa.RSAPrivateKey
    ) -> None:
        """For an app without secret or certificate, the start message points at its credentials."""
        emulator = await federated_emulator(new_emulator, tmp_path, issuer_key)
        text = describe(emulator, Path("scenario.yaml"))

        assert "signs in with apps[0].federated_credentials" in text
        assert "IDENTITY_ENDPOINT" not in text
