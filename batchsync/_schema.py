"""Pydantic models of manifest version 1, field for field as users write them.

These models only check shape and values. Checks that span targets (duplicate names and ids)
and checks against the outside world (does a reference resolve) live in :mod:`batchsync.manifest`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from batchsync.clouds import CloudName, is_loopback_url

__all__ = [
    "SECRET_KEYS",
    "AuthModel",
    "EndpointsModel",
    "LimitsModel",
    "ManagedIdentityModel",
    "ManifestModel",
    "ReferenceModel",
    "TargetModel",
    "WorkloadIdentityModel",
]

# The synchronizationSecret enum of Microsoft Graph v1.0, in its order. Graph matches these names
# case-sensitively and returns a 500 InternalError for any other key, which no retry fixes.
SecretKey = Literal[
    "None", "UserName", "Password", "SecretToken", "AppKey", "BaseAddress", "ClientIdentifier",
    "ClientSecret", "SingleSignOnType", "Sandbox", "Url", "Domain", "ConsumerKey",
    "ConsumerSecret", "TokenKey", "TokenExpiration", "Oauth2AccessToken",
    "Oauth2AccessTokenCreationTime", "Oauth2RefreshToken", "SyncAll", "InstanceName",
    "Oauth2ClientId", "Oauth2ClientSecret", "CompanyId", "UpdateKeyOnSoftDelete",
    "SynchronizationSchedule", "SystemOfRecord", "SandboxName", "EnforceDomain",
    "SyncNotificationSettings", "SkipOutOfScopeDeletions", "Oauth2AuthorizationCode",
    "Oauth2RedirectUri", "ApplicationTemplateIdentifier", "Oauth2TokenExchangeUri",
    "Oauth2AuthorizationUri", "AuthenticationType", "Server", "PerformInboundEntitlementGrants",
    "HardDeletesEnabled", "SyncAgentCompatibilityKey", "SyncAgentADContainer", "ValidateDomain",
    "TestReferences", "ConnectionString",
]  # fmt: skip
SECRET_KEYS: tuple[str, ...] = get_args(SecretKey)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _guid(value: str) -> str:
    if not _GUID.match(value):
        msg = f'"{value}" is not a GUID; expected 8-4-4-4-12 hex digits, such as the object id shown in the Entra admin center'
        raise ValueError(msg)

    return value.lower()


def _tenant(value: str) -> str:
    if _GUID.match(value):
        return value.lower()
    if _DOMAIN.match(value):
        return value.lower()
    msg = f'"{value}" is neither a tenant id (GUID) nor a domain such as contoso.onmicrosoft.com'
    raise ValueError(msg)


def _name(value: str) -> str:
    if not value.strip():
        msg = "must not be empty"
        raise ValueError(msg)
    if _CONTROL.search(value):
        msg = "must not contain control characters"
        raise ValueError(msg)

    return value


def _version(value: Any) -> Any:
    # Literal[1] alone accepts true and 1.0, even in strict mode, because both compare equal to 1.
    # Pydantic reports only ValueError as a validation error, hence no TypeError (TRY004).
    if isinstance(value, bool):
        msg = f"must be the integer 1; got the boolean {str(value).lower()}"
        raise ValueError(msg)  # noqa: TRY004
    if isinstance(value, float):
        msg = f"must be the integer 1; got the number {value}"
        raise ValueError(msg)  # noqa: TRY004

    return value


def _url(value: str) -> str:
    lowered = value.lower()
    if lowered.startswith("https://"):
        return value.rstrip("/")
    if lowered.startswith("http://"):
        if is_loopback_url(value):
            return value.rstrip("/")
        msg = f'"{value}" uses plain http; use https (http is allowed only for loopback addresses)'
        raise ValueError(msg)
    msg = f'"{value}" is not an https URL'
    raise ValueError(msg)


Guid = Annotated[str, AfterValidator(_guid)]
Tenant = Annotated[str, AfterValidator(_tenant)]
Name = Annotated[str, Field(max_length=256), AfterValidator(_name)]
Url = Annotated[str, AfterValidator(_url)]
Version = Annotated[Literal[1], BeforeValidator(_version)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ReferenceModel(_Strict):
    """Exactly one of ``env``, ``file`` or ``value``."""

    env: Annotated[str, Field(min_length=1)] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None
    value: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [key for key in ("env", "file", "value") if key in data]
            if len(kinds) > 1:
                msg = f"a reference has exactly one of env, file or value; found {' and '.join(kinds)}"
                raise ValueError(msg)
            if not kinds and not (set(data) - {"env", "file", "value"}):
                msg = "a reference needs one of env, file or value, such as {env: APP_SECRET}"
                raise ValueError(msg)

        return data

    @property
    def kind(self) -> Literal["env", "file", "value"]:
        """Return which kind of reference this is."""
        if self.env is not None:
            return "env"
        if self.file is not None:
            return "file"

        return "value"

    @property
    def target(self) -> str:
        """Return the variable name, file path or literal."""
        return self.env or self.file or self.value or ""


class EndpointsModel(_Strict):
    """Graph base URL, login host and an extra CA, for ``cloud: custom``."""

    graph: Url
    login: Url
    ca_bundle: Annotated[str, Field(min_length=1)] | None = None


class WorkloadIdentityModel(_Strict):
    """Workload identity federation: a Kubernetes service-account token as client assertion."""

    token_file: Annotated[str, Field(min_length=1)] | None = None


class ManagedIdentityModel(_Strict):
    """An Azure managed identity: system-assigned, or user-assigned with ``client_id``."""

    client_id: Guid | None = None
    # The instance metadata endpoint (169.254.169.254) is used only when asked for by name.
    imds: bool = False


_CREDENTIAL_KINDS = ("client_secret", "certificate", "workload_identity", "managed_identity")


class AuthModel(_Strict):
    """The sign-in credential: a client secret, a certificate, workload identity or managed identity."""

    client_id: Guid | None = None
    client_secret: ReferenceModel | None = None
    certificate: ReferenceModel | None = None
    workload_identity: WorkloadIdentityModel | None = None
    managed_identity: ManagedIdentityModel | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> AuthModel:
        given = [name for name in _CREDENTIAL_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            msg = f"give exactly one of {', '.join(_CREDENTIAL_KINDS)}; found {found}"
            raise ValueError(msg)
        if given[0] in ("client_secret", "certificate") and self.client_id is None:
            msg = f"client_id is required with {given[0]}"
            raise ValueError(msg)
        if given[0] == "managed_identity" and self.client_id is not None:
            msg = (
                "with managed_identity, give a user-assigned identity as managed_identity.client_id"
            )
            raise ValueError(msg)

        return self


class LimitsModel(_Strict):
    """Concurrency, rate and retry limits of a run."""

    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    requests_per_second: Annotated[float, Field(gt=0, le=10_000)] = 10.0
    burst: Annotated[int, Field(ge=1, le=10_000)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 6
    request_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    max_target_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    max_retry_after_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    backoff_base_seconds: Annotated[float, Field(gt=0, le=600)] = 1.0
    backoff_max_seconds: Annotated[float, Field(gt=0, le=3_600)] = 60.0


class TargetModel(_Strict):
    """One service principal or application to hand credentials to."""

    name: Name
    service_principal: Guid | None = None
    application: Guid | None = None
    credentials: Annotated[dict[SecretKey, ReferenceModel], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_object(self) -> TargetModel:
        if (self.service_principal is None) == (self.application is None):
            found = "both" if self.service_principal else "neither"
            msg = f"give exactly one of service_principal or application (object id); found {found}"
            raise ValueError(msg)

        return self

    @property
    def object_id(self) -> str:
        """Return the object id, whichever kind of object this is."""
        return self.service_principal or self.application or ""


class ManifestModel(_Strict):
    """Everything in a manifest except ``targets``, which are validated one by one."""

    version: Version
    tenant: Tenant
    cloud: CloudName = "global"
    endpoints: EndpointsModel | None = None
    api_version: Literal["v1.0", "beta"] = "v1.0"
    auth: AuthModel
    limits: LimitsModel = LimitsModel()

    @model_validator(mode="after")
    def _endpoints_with_custom(self) -> ManifestModel:
        if self.cloud == "custom" and self.endpoints is None:
            msg = "cloud: custom needs an endpoints section with graph and login URLs"
            raise ValueError(msg)
        if self.cloud != "custom" and self.endpoints is not None:
            msg = f"endpoints is only allowed with cloud: custom (cloud is {self.cloud})"
            raise ValueError(msg)

        return self
