"""Load and validate a batchsync manifest (version 1).

Validation is complete before anything is called: every problem in the file is collected, each
with its file, line, column and field, and :class:`~batchsync.errors.ManifestError` carries them
all at once. The checks run in three layers: the YAML text (syntax, duplicate keys, aliases), the
schema of each section and each target (pydantic), and the rules that span the file or reach
outside it (duplicate names and object ids, references that must resolve).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import TypeAdapter, ValidationError

from batchsync._problems import format_field, problem_from_error
from batchsync._schema import SECRET_KEYS, LimitsModel, ManifestModel, ReferenceModel, TargetModel
from batchsync._yaml import Document, YamlProblem, parse
from batchsync.clouds import CLOUDS, Endpoints
from batchsync.credentials import Reference, ReferenceKind, file_is_shared, resolve
from batchsync.errors import CredentialError, ManifestError, ManifestProblem

__all__ = ["AuthSettings", "ManagedIdentitySettings", "Manifest", "Target", "load_manifest"]

# A manifest of 100,000 targets is about 30 MB; anything far larger is a wrong file.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

# Keys whose value is a secret in every connector; a literal {value: ...} for them is a warning.
SECRET_VALUE_KEYS = frozenset(
    {
        "Password",
        "SecretToken",
        "AppKey",
        "ClientSecret",
        "ConsumerSecret",
        "TokenKey",
        "Oauth2AccessToken",
        "Oauth2RefreshToken",
        "Oauth2ClientSecret",
        "Oauth2AuthorizationCode",
        "ConnectionString",
    }
)

_TARGET = TypeAdapter(TargetModel)
_OBJECT_KINDS = {"service_principal": "servicePrincipal", "application": "application"}

ObjectKind = Literal["servicePrincipal", "application"]


@dataclass(frozen=True, slots=True)
class Target:
    """One object to call acquireAccessToken on, with references to its credentials."""

    index: int
    name: str
    kind: ObjectKind
    object_id: str
    credentials: tuple[tuple[str, Reference], ...]


@dataclass(frozen=True, slots=True)
class ManagedIdentitySettings:
    """A managed identity: user-assigned when ``client_id`` is set, else system-assigned."""

    client_id: str | None = None
    imds: bool = False


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The sign-in settings for Entra ID, with exactly one credential kind set.

    ``client_id`` is None only for managed identity, and for workload identity when it comes
    from ``AZURE_CLIENT_ID``.
    """

    client_id: str | None
    client_secret: Reference | None = None
    certificate: Reference | None = None
    workload_identity_token_file: str | None = None
    workload_identity: bool = False
    managed_identity: ManagedIdentitySettings | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: settings, endpoints and targets, with references unresolved."""

    path: Path
    sha256: str
    tenant: str
    cloud: str
    endpoints: Endpoints
    api_version: str
    auth: AuthSettings
    limits: LimitsModel
    targets: list[Target]
    warnings: list[ManifestProblem] = field(default_factory=list)


def load_manifest(
    path: Path, *, check_references: bool = True, check_auth: bool = True
) -> Manifest:
    """Read, parse and validate the manifest at ``path``.

    With ``check_references``, every distinct ``env`` and ``file`` reference is resolved once (and
    the value dropped) so that a missing variable fails the whole run before the first call, and
    ``endpoints.ca_bundle`` must exist. ``check_auth=False`` leaves the sign-in references out, for
    runs that replace them (``run --emulator``).

    Raises:
        ManifestError: with every problem found.
    """
    raw = _read(path)
    text = _decode(path, raw)
    # The node tree kept for error positions is a million small objects on a large manifest and
    # contains no reference cycles. Pausing the cycle collector halves the load time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        document = _parse(path, text)
        validator = _Validator(path, document, hashlib.sha256(raw).hexdigest(), check_references)
        validator.check_auth = check_auth
        return validator.run()
    finally:
        if collecting:
            gc.enable()


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            mib = MAX_MANIFEST_BYTES // (1024 * 1024)
            _fail(path, f"the file is {size} bytes, over the {mib} MiB limit; split it into shards")
        return path.read_bytes()
    except FileNotFoundError:
        _fail(path, "file not found; check the path")
    except IsADirectoryError:
        _fail(path, "is a directory; give the manifest file")
    except PermissionError:
        _fail(path, "permission denied; make the file readable for this user")
    except OSError as exc:
        _fail(path, f"cannot read the file: {exc.strerror}")


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"the file is not UTF-8 (invalid byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        raise ManifestError([ManifestProblem(str(path), line, column, "", message)]) from None
    if not text.strip():
        _fail(path, "the file is empty; see configs/examples/ for a manifest to start from")

    return text


def _parse(path: Path, text: str) -> Document:
    try:
        document = parse(text)
    except ValueError as exc:
        problem: YamlProblem = exc.args[0]
        located = ManifestProblem(str(path), problem.line, problem.column, "", problem.message)
        raise ManifestError([located]) from None
    if not isinstance(document.data, dict):
        kind = "a list" if isinstance(document.data, list) else "a single value"
        message = (
            f"the manifest must be a mapping with version, tenant, auth and targets; found {kind}"
        )
        raise ManifestError([ManifestProblem(str(path), 1, 1, "", message)])

    return document


def _fail(path: Path, message: str) -> NoReturn:
    raise ManifestError([ManifestProblem(str(path), 1, 1, "", message)])


class _Validator:
    """Collects every problem of one manifest and builds the :class:`Manifest` when none is found."""

    def __init__(self, path: Path, document: Document, sha256: str, check_references: bool) -> None:
        self.path = path
        self.document = document
        self.sha256 = sha256
        self.check_references = check_references
        self.problems: list[ManifestProblem] = []
        self.warnings: list[ManifestProblem] = []
        self.check_auth = True
        self._base_dir = path.parent
        self._references: dict[tuple[ReferenceKind, str], Reference] = {}

    def run(self) -> Manifest:
        data = dict(self.document.data)
        raw_targets = data.pop("targets", None)
        settings = self._settings(data)
        targets = self._targets(raw_targets)
        self._check_duplicates(raw_targets)
        self._check_literals(targets)
        if self.check_references:
            if settings is not None:
                self._check_settings_files(settings)
            self._check_references(settings, targets, raw_targets)
        if self.problems:
            raise ManifestError(self.problems)
        assert settings is not None

        return self._build(settings, targets)

    def _settings(self, data: dict[str, Any]) -> ManifestModel | None:
        try:
            return ManifestModel.model_validate(data)
        except ValidationError as exc:
            self._add_errors(exc, ())
            return None

    def _targets(self, raw: Any) -> list[TargetModel | None]:
        if raw is None:
            self._problem(
                ("targets",), 'required key "targets" is missing; list at least one target', ()
            )
            return []
        if not isinstance(raw, list) or not raw:
            self._problem(("targets",), "must be a non-empty list of targets", ("targets",))
            return []
        targets: list[TargetModel | None] = []
        for index, item in enumerate(raw):
            try:
                targets.append(_TARGET.validate_python(item))
            except ValidationError as exc:
                self._add_errors(exc, ("targets", index))
                targets.append(None)

        return targets

    def _check_duplicates(self, raw: Any) -> None:
        if not isinstance(raw, list):
            return
        seen: dict[tuple[str, str], int] = {}
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                continue
            for key in ("name", "service_principal", "application"):
                value = item.get(key)
                if not isinstance(value, str):
                    continue
                identity = ("name" if key == "name" else "object", value.lower())
                if identity in seen:
                    self._duplicate(index, key, value, seen[identity])
                else:
                    seen[identity] = index

    def _duplicate(self, index: int, key: str, value: str, first: int) -> None:
        what = "name" if key == "name" else "object id"
        line, _ = self.document.position(("targets", first))
        message = f'duplicate {what} "{value}", first used by targets[{first}] on line {line}; each target must be unique'
        self._problem(("targets", index, key), message, ("targets", index, key))

    def _check_settings_files(self, settings: ManifestModel) -> None:
        if settings.endpoints is None or settings.endpoints.ca_bundle is None:
            return
        ca_path = self._relative(settings.endpoints.ca_bundle)
        if not ca_path.is_file():
            location = ("endpoints", "ca_bundle")
            self._problem(location, f"CA bundle {ca_path} does not exist; fix the path", location)

    def _check_literals(self, targets: list[TargetModel | None]) -> None:
        for index, target in enumerate(targets):
            for key, model in target.credentials.items() if target else ():
                if model.kind == "value" and key in SECRET_VALUE_KEYS:
                    self._warn(
                        ("targets", index, "credentials", key),
                        f"{key} is a literal in the manifest; keep secrets in an env or file reference",
                    )

    def _check_references(
        self, settings: ManifestModel | None, targets: list[TargetModel | None], raw: Any
    ) -> None:
        # Many targets share a reference (one variable per vendor), so each distinct reference
        # is resolved once and a failure is reported once, where it is first used.
        uses: dict[tuple[ReferenceKind, str], list[tuple[str | int, ...]]] = {}
        if settings is not None and self.check_auth:
            for name in ("client_secret", "certificate"):
                model = getattr(settings.auth, name)
                if model is not None:
                    uses.setdefault((model.kind, model.target), []).append(("auth", name))
        for index, target in enumerate(targets):
            pairs = _raw_references(raw[index]) if target is None else _model_references(target)
            for key, kind, value in pairs:
                location = ("targets", index, "credentials", key)
                uses.setdefault((kind, value), []).append(location)
        for (kind, value), locations in uses.items():
            if kind != "value":
                self._check_reference(self._reference_for(kind, value), locations)

    def _check_reference(
        self, reference: Reference, locations: list[tuple[str | int, ...]]
    ) -> None:
        first = locations[0]
        try:
            resolve(reference)
        except CredentialError as exc:
            # The field path already names the reference, so the message starts at the reason.
            at = (*first, reference.kind)
            message = f"{exc.reason}; {exc.fix}" if exc.fix else exc.reason
            if len(locations) > 1:
                message += f" ({len(locations) - 1} more fields use the same reference)"
            self._problem(at, message, at)
            return
        if reference.kind == "file" and file_is_shared(reference):
            self._warn(first, f"file {reference.path} is readable by other users; chmod 600 it")

    def _build(self, settings: ManifestModel, targets: Iterable[TargetModel | None]) -> Manifest:
        built = [self._target(index, model) for index, model in enumerate(targets) if model]
        return Manifest(
            path=self.path,
            sha256=self.sha256,
            tenant=settings.tenant,
            cloud=settings.cloud,
            endpoints=self._endpoints(settings),
            api_version=settings.api_version,
            auth=self._auth(settings),
            limits=settings.limits,
            targets=built,
            warnings=self.warnings,
        )

    def _target(self, index: int, model: TargetModel) -> Target:
        kind = "service_principal" if model.service_principal else "application"
        credentials = tuple((key, self._reference(ref)) for key, ref in model.credentials.items())
        return Target(
            index=index,
            name=model.name,
            kind="servicePrincipal" if kind == "service_principal" else "application",
            object_id=model.object_id,
            credentials=credentials,
        )

    def _endpoints(self, settings: ManifestModel) -> Endpoints:
        if settings.endpoints is None:
            return CLOUDS[settings.cloud]
        ca_bundle = settings.endpoints.ca_bundle
        return Endpoints(
            graph=settings.endpoints.graph,
            login=settings.endpoints.login,
            ca_bundle=str(self._relative(ca_bundle)) if ca_bundle else None,
        )

    def _auth(self, settings: ManifestModel) -> AuthSettings:
        auth = settings.auth
        workload = auth.workload_identity
        managed = auth.managed_identity
        return AuthSettings(
            client_id=auth.client_id,
            client_secret=self._reference(auth.client_secret) if auth.client_secret else None,
            certificate=self._reference(auth.certificate) if auth.certificate else None,
            workload_identity=workload is not None,
            workload_identity_token_file=(
                str(self._relative(workload.token_file))
                if workload and workload.token_file
                else None
            ),
            managed_identity=ManagedIdentitySettings(managed.client_id, managed.imds)
            if managed
            else None,
        )

    def _reference(self, model: ReferenceModel) -> Reference:
        return self._reference_for(model.kind, model.target)

    def _reference_for(self, kind: ReferenceKind, target: str) -> Reference:
        # One shared object per distinct reference keeps 100,000-target manifests small.
        key = (kind, target)
        reference = self._references.get(key)
        if reference is None:
            reference = Reference(kind, target, base_dir=self._base_dir)
            self._references[key] = reference

        return reference

    def _relative(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def _add_errors(self, exc: ValidationError, prefix: tuple[str | int, ...]) -> None:
        for error in exc.errors(include_url=False):
            error["loc"] = (*prefix, *error["loc"])
            self.problems.append(problem_from_error(str(self.path), self.document, error))

    def _problem(
        self, field_path: tuple[str | int, ...], message: str, at: tuple[str | int, ...]
    ) -> None:
        line, column = self.document.position(at)
        self.problems.append(
            ManifestProblem(str(self.path), line, column, format_field(field_path), message)
        )

    def _warn(self, field_path: tuple[str | int, ...], message: str) -> None:
        line, column = self.document.position(field_path)
        self.warnings.append(
            ManifestProblem(str(self.path), line, column, format_field(field_path), message)
        )


def _model_references(target: TargetModel) -> list[tuple[str, ReferenceKind, str]]:
    return [(key, model.kind, model.target) for key, model in target.credentials.items()]


def _raw_references(item: Any) -> list[tuple[str, ReferenceKind, str]]:
    """Return the well-formed references of a target that failed validation elsewhere.

    An unset variable is then reported together with the target's other problems, not only
    after those are fixed.
    """
    credentials = item.get("credentials") if isinstance(item, dict) else None
    if not isinstance(credentials, dict):
        return []
    pairs: list[tuple[str, ReferenceKind, str]] = []
    for key, reference in credentials.items():
        if isinstance(reference, dict) and len(reference) == 1:
            kind, value = next(iter(reference.items()))
            if kind in ("env", "file") and isinstance(value, str) and value:
                pairs.append((str(key), kind, value))

    return pairs


def secret_key_names() -> tuple[str, ...]:
    """Return the 45 ``synchronizationSecret`` names Graph accepts, in enum order."""
    return SECRET_KEYS
