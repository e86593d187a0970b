"""Scenario files: what the emulated tenant contains and how its services misbehave.

A scenario is a YAML file validated by the pydantic models below. It lists the tenants and app
registrations that can sign in, the directory objects that exist, token and throttling limits,
and the faults to inject. Tests build scenarios in code with :meth:`Scenario.model_validate`.
Every model rejects unknown keys, so a typo in a scenario fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from batchsync.emulator.assertions import RegisteredCertificate
from batchsync.emulator.federation import TOKEN_EXCHANGE_AUDIENCE, load_issuer_key

__all__ = [
    "DEFAULT_SCENARIO_PATH",
    "AppRegistration",
    "Directory",
    "DisconnectFault",
    "Fault",
    "FaultSelector",
    "FederatedCredential",
    "MalformedFault",
    "ManagedIdentity",
    "ManagedIdentityEndpoint",
    "Range",
    "ResetFault",
    "RetryAfterShape",
    "Scenario",
    "SelectableFault",
    "SlowFault",
    "StatusFault",
    "StormFault",
    "Tenant",
    "ThrottlingSettings",
    "TokenSettings",
    "load_scenario",
]

DEFAULT_SCENARIO_PATH = Path(__file__).with_name("default.yaml")

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Secret values must never reach an error message, so validation errors under these keys omit
# the rejected input.
_SECRET_FIELDS = frozenset({"secrets", "expired_secrets", "identity_header"})

RetryAfterShape = Literal[
    "integer", "decimal", "pair", "http_date", "absent", "huge", "zero", "negative", "garbage"
]


def normalize_guid(value: str) -> str:
    """Return ``value`` in lowercase, or raise ValueError unless it is a GUID."""
    lowered = value.strip().lower()
    if not _GUID.match(lowered):
        raise ValueError(f"{value!r} is not a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47")

    return lowered


def is_guid(value: str) -> bool:
    """Return whether ``value`` is a GUID in any letter case."""
    return _GUID.match(value.lower()) is not None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    """Inclusive range of numbers from which the emulator draws a value per use."""

    min: float = Field(ge=0)
    max: float = Field(ge=0)

    @model_validator(mode="after")
    def _check_order(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")

        return self


class Tenant(_Model):
    """Entra tenant, addressable in URLs by its id or any of its domains."""

    id: str
    domains: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return normalize_guid(value)

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [domain.lower() for domain in value]


class FederatedCredential(_Model):
    """Federated identity credential: the app trusts tokens that ``issuer`` signs for ``subject``.

    ``public_key`` is a PEM file with the issuer's RSA signing key, as a public key or inside a
    certificate. A relative path is resolved against the scenario file's directory.
    """

    issuer: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: [TOKEN_EXCHANGE_AUDIENCE], min_length=1
    )
    public_key: Path

    @field_validator("public_key")
    @classmethod
    def _resolve_public_key(cls, value: Path, info: ValidationInfo) -> Path:
        path = value if value.is_absolute() else _base_dir(info) / value
        if not path.is_file():
            raise ValueError(f"public key file {str(path)!r} does not exist")
        try:
            load_issuer_key(path)
        except (ValueError, TypeError) as error:
            raise ValueError(f"public key file {str(path)!r} is not usable: {error}") from error

        return path


class AppRegistration(_Model):
    """App registration that signs in with the client credentials grant."""

    client_id: str
    tenant: str
    secrets: list[str] = Field(default_factory=list)
    expired_secrets: list[str] = Field(default_factory=list)
    certificates: list[Path] = Field(default_factory=list)
    federated_credentials: list[FederatedCredential] = Field(default_factory=list)
    permissions: list[str] = Field(default_factory=list)

    @field_validator("client_id", "tenant")
    @classmethod
    def _check_guid(cls, value: str) -> str:
        return normalize_guid(value)

    @field_validator("federated_credentials")
    @classmethod
    def _check_federated_unique(cls, value: list[FederatedCredential]) -> list[FederatedCredential]:
        # Entra ID rejects a second credential with the same issuer and subject on one app.
        pairs = [f"{credential.issuer} {credential.subject}" for credential in value]
        _check_unique(pairs, "federated_credentials", "issuer and subject")

        return value

    @field_validator("certificates")
    @classmethod
    def _resolve_certificates(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        base_dir = _base_dir(info)
        resolved = [path if path.is_absolute() else base_dir / path for path in value]
        for path in resolved:
            _check_certificate(path)

        return resolved


def _check_certificate(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"certificate file {str(path)!r} does not exist")
    try:
        RegisteredCertificate.load(path)
    except (ValueError, TypeError) as error:
        raise ValueError(f"certificate file {str(path)!r} is not usable: {error}") from error


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base_dir = context.get("base_dir")

    return Path(base_dir) if base_dir is not None else Path.cwd()


class ManagedIdentityEndpoint(_Model):
    """The App Service managed identity endpoint: the ``X-IDENTITY-HEADER`` value it requires.

    App Service gives the hosted code this value in ``IDENTITY_HEADER``.
    """

    identity_header: str = Field(min_length=1)


class ManagedIdentity(_Model):
    """Managed identity assigned to the emulated App Service: system-assigned or user-assigned.

    A request without ``client_id`` gets a token for the system-assigned identity, and one with
    ``client_id`` for the user-assigned identity with that client id.
    """

    client_id: str
    tenant: str
    system_assigned: bool = False
    permissions: list[str] = Field(default_factory=list)

    @field_validator("client_id", "tenant")
    @classmethod
    def _check_guid(cls, value: str) -> str:
        return normalize_guid(value)


ObjectIds = list[str] | Literal["*"]


class Directory(_Model):
    """Directory objects that exist, by object id; ``"*"`` means every GUID except ``missing``."""

    service_principals: ObjectIds = Field(default_factory=list)
    applications: ObjectIds = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)

    @field_validator("service_principals", "applications")
    @classmethod
    def _check_ids(cls, value: ObjectIds) -> ObjectIds:
        if value == "*":
            return value

        return [normalize_guid(item) for item in value]

    @field_validator("missing")
    @classmethod
    def _check_missing(cls, value: list[str]) -> list[str]:
        return [normalize_guid(item) for item in value]


class TokenThrottle(_Model):
    """Limit on token requests per client id; 0 turns it off."""

    max_per_minute: int = Field(default=0, ge=0)


class TokenSettings(_Model):
    """Access token lifetime and token endpoint throttling."""

    # Real Entra picks a random lifetime between 60 and 90 minutes to spread refreshes out.
    lifetime_seconds: int | Range = Range(min=3600, max=5400)
    # Graph accepts tokens up to this long after `exp` and before `nbf`, like the
    # 5-minute default clock skew of Microsoft.IdentityModel.
    clock_skew_seconds: int = Field(default=300, ge=0)
    throttle: TokenThrottle = TokenThrottle()

    @field_validator("lifetime_seconds")
    @classmethod
    def _check_lifetime(cls, value: int | Range) -> int | Range:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"lifetime must be at least 1 second, got {value}")

        return value


class Bucket(_Model):
    """Token bucket: ``burst`` units of capacity, refilled at ``rate`` units per second."""

    burst: float = Field(gt=0)
    rate: float = Field(gt=0)


class ThrottlingSettings(_Model):
    """Graph identity throttling per (app, tenant) pair: resource units plus a write quota."""

    tenant_size: Literal["small", "medium", "large"] = "small"
    resource_units: Bucket | None = None
    # Graph allows 3,000 writes per 150 seconds per app and tenant.
    writes: Bucket = Bucket(burst=3000, rate=20)
    scale: float = Field(default=1.0, gt=0)
    retry_after: RetryAfterShape = "integer"


class FaultSelector(_Model):
    """Selectors of the Graph requests a fault applies to; every selector given must match.

    ``calls`` counts the requests per object that reach fault selection, which are those that
    passed authentication and throttling. ``rate`` is a probability drawn per request from the
    seed, so the same requests fail on every run.
    """

    rate: float | None = Field(default=None, ge=0, le=1)
    calls: list[Annotated[int, Field(ge=1)]] | None = None
    objects: list[str] | None = None

    @field_validator("objects")
    @classmethod
    def _check_objects(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None

        return [normalize_guid(item) for item in value]


def _header_text(value: object) -> object:
    """Accept numbers for header values, so that ``retry_after: 2`` means ``"2"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)

    return value


class StatusFault(FaultSelector):
    """Respond with ``status`` and a Graph error body."""

    kind: Literal["status"]
    status: int = Field(ge=400, le=599)
    code: str | None = None
    message: str | None = None
    retry_after: str | None = None

    _coerce_retry_after = field_validator("retry_after", mode="before")(_header_text)


class DisconnectFault(FaultSelector):
    """Close the connection without writing anything."""

    kind: Literal["disconnect"]


class ResetFault(FaultSelector):
    """Send the start of a response, then reset the TCP connection."""

    kind: Literal["reset"]


class SlowFault(FaultSelector):
    """Wait ``delay_seconds`` before responding, to trip the client's timeout."""

    kind: Literal["slow"]
    delay_seconds: float = Field(default=5.0, gt=0)


class MalformedFault(FaultSelector):
    """Respond with a body that is not a Graph error, or with a status Graph never sends."""

    kind: Literal["html", "non_json", "empty_body", "truncated", "unknown_status"]
    status: int | None = Field(default=None, ge=100, le=999)


class StormFault(_Model):
    """Respond to every Graph request with 503 during a time window."""

    kind: Literal["storm"]
    start_seconds: float = Field(default=0.0, ge=0)
    duration_seconds: float = Field(gt=0)
    retry_after: str | None = None
    code: str = "serviceNotAvailable"

    _coerce_retry_after = field_validator("retry_after", mode="before")(_header_text)


SelectableFault = StatusFault | DisconnectFault | ResetFault | SlowFault | MalformedFault
Fault = Annotated[SelectableFault | StormFault, Field(discriminator="kind")]


class Scenario(_Model):
    """Everything the emulator serves: tenants, apps, directory, limits and faults."""

    seed: int = 0
    latency_ms: Annotated[float, Field(ge=0)] | Range = 0
    tenants: list[Tenant] = Field(min_length=1)
    apps: list[AppRegistration] = Field(min_length=1)
    directory: Directory = Directory()
    tokens: TokenSettings = TokenSettings()
    throttling: ThrottlingSettings | None = None
    faults: list[Fault] = Field(default_factory=list)
    managed_identity: ManagedIdentityEndpoint | None = None
    managed_identities: list[ManagedIdentity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_references(self) -> Scenario:
        _check_unique([tenant.id for tenant in self.tenants], "tenants", "id")
        # A managed identity is an app registration too, so its client id must differ from
        # every app's.
        client_ids = [app.client_id for app in self.apps]
        client_ids += [identity.client_id for identity in self.managed_identities]
        _check_unique(client_ids, "apps and managed_identities", "client_id")
        domains = [domain for tenant in self.tenants for domain in tenant.domains]
        _check_unique(domains, "tenants", "domains")

        tenant_ids = {tenant.id for tenant in self.tenants}
        _check_tenants("apps", [app.tenant for app in self.apps], tenant_ids)
        identity_tenants = [identity.tenant for identity in self.managed_identities]
        _check_tenants("managed_identities", identity_tenants, tenant_ids)
        self._check_managed_identities()

        return self

    def _check_managed_identities(self) -> None:
        if self.managed_identities and self.managed_identity is None:
            raise ValueError(
                "managed_identities needs managed_identity.identity_header, the value "
                "clients must send in X-IDENTITY-HEADER"
            )
        system_assigned = [item for item in self.managed_identities if item.system_assigned]
        if len(system_assigned) > 1:
            raise ValueError(
                "managed_identities: more than one identity has system_assigned: true; an App "
                "Service has at most one system-assigned identity"
            )


def _check_tenants(section: str, tenants: list[str], tenant_ids: set[str]) -> None:
    for index, tenant in enumerate(tenants):
        if tenant not in tenant_ids:
            raise ValueError(
                f"{section}[{index}].tenant {tenant!r} is not listed under tenants; "
                "add it there or fix the id"
            )


def _check_unique(values: list[str], section: str, field: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{section}: {field} {value!r} appears more than once")
        seen.add(value)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file.

    Relative certificate and public key paths are resolved against the file's directory.

    Raises:
        ValueError: the file cannot be read, is not valid YAML, or breaks a rule of the
            schema. The message names the file, the field and the rule.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot read scenario file: {error.strerror}") from error

    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: invalid YAML: {error.problem}") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML: {error}") from error

    try:
        return Scenario.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as error:
        raise ValueError(f"{path}: {describe_validation_error(error)}") from None


def describe_validation_error(error: ValidationError) -> str:
    """Format each problem as ``field.path: message (got value)``, one per line.

    Values of secret fields are left out.
    """
    lines = []
    for problem in error.errors(include_url=False):
        location = _format_location(problem["loc"])
        line = f"{location}: {problem['msg']}"
        if not _SECRET_FIELDS.intersection(str(part) for part in problem["loc"]):
            line += f" (got {_short_repr(problem.get('input'))})"
        lines.append(line)

    return "\n".join(lines)


def _format_location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part

    return text or "(top level)"


def _short_repr(value: Any) -> str:
    text = repr(value)

    return text if len(text) <= 80 else text[:77] + "..."
