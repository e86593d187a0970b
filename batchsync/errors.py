"""Exceptions raised by batchsync.

Every error batchsync raises on purpose derives from :class:`BatchsyncError`, so a caller can
catch the whole family in one place. None of them ever carries a secret value in its message or
attributes: they name the reference (``env: SF_SECRET``), never what it resolved to.

The hierarchy::

    BatchsyncError
    ├── ManifestError            the manifest is invalid; carries every problem found
    ├── CredentialError          a reference could not be resolved (also a LookupError)
    ├── AuthError                Entra ID refused to issue a token (AADSTS code and message)
    ├── ReportError              the report file cannot be written (also an OSError)
    └── GraphError               one acquireAccessToken call failed
        ├── GraphRequestError    the request never got an answer: connection or timeout
        │   └── GraphTimeoutError   the attempt timed out (also a TimeoutError)
        └── GraphResponseError   Graph answered with an error status
            └── ThrottledError   429, or 503 with Retry-After; carries ``retry_after``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AuthError",
    "BatchsyncError",
    "CredentialError",
    "GraphError",
    "GraphRequestError",
    "GraphResponseError",
    "GraphTimeoutError",
    "ManifestError",
    "ManifestProblem",
    "ReportError",
    "ThrottledError",
]


class BatchsyncError(Exception):
    """Root of every error batchsync raises on purpose."""


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One problem found in a manifest, located by file, line, column and field path."""

    path: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"

        return f"{where}: {self.message}"


class ManifestError(BatchsyncError):
    """The manifest is invalid. ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column, p.field))
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(str(problem) for problem in self.problems)
        super().__init__(f"invalid manifest ({count} {noun}):\n{lines}")


class CredentialError(BatchsyncError, LookupError):
    """A credential reference could not be resolved; names the reference, never a value."""

    def __init__(self, reference: str, reason: str, *, fix: str = "") -> None:
        self.reference = reference
        self.reason = reason
        self.fix = fix
        message = f"{reference}: {reason}"
        if fix:
            message = f"{message}; {fix}"
        super().__init__(message)


class AuthError(BatchsyncError):
    """Entra ID did not issue a token. Carries MSAL's ``error`` and ``error_description``."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        error_codes: tuple[int, ...] = (),
        correlation_id: str | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.error_codes = error_codes
        self.correlation_id = correlation_id
        first_line = description.strip().splitlines()[0] if description.strip() else ""
        parts = [part for part in ("authentication failed", error, first_line) if part]
        super().__init__(": ".join(parts))

    @property
    def aadsts_code(self) -> str | None:
        """Return the AADSTS code, such as ``AADSTS7000215``, when Entra ID sent one."""
        if self.error_codes:
            return f"AADSTS{self.error_codes[0]}"

        return None


class ReportError(BatchsyncError, OSError):
    """A report cannot be created or written, or (``action="read"``) read back."""

    def __init__(self, path: Path, reason: str, *, action: str = "write") -> None:
        self.path = path
        super().__init__(f"cannot {action} report {path}: {reason}")


class GraphError(BatchsyncError):
    """One acquireAccessToken call failed. ``code`` is the value the report stores."""

    code: str = "unknown"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)


class GraphRequestError(GraphError):
    """The request got no HTTP response (connection refused, reset, closed, TLS failure).

    acquireAccessToken has the same effect when repeated, so a retry is always safe.
    """

    code = "connection_error"


class GraphTimeoutError(GraphRequestError, TimeoutError):
    """An attempt took longer than ``limits.request_timeout_seconds``."""

    code = "timeout"


class GraphResponseError(GraphError):
    """Graph returned an error status; carries Graph's own error code and ids."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after
        super().__init__(message, code=code)

    def __str__(self) -> str:
        text = f"HTTP {self.status} {self.code}"
        if self.message:
            text = f"{text}: {self.message}"
        if self.request_id:
            text = f"{text} (request-id {self.request_id})"

        return text


class ThrottledError(GraphResponseError):
    """Graph asked the caller to slow down: 429, or 503 with ``Retry-After``."""
