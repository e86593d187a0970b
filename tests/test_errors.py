"""Tests for the exception hierarchy: one root, the built-in bases, and each class's message."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import batchsync.errors
from batchsync.errors import (
    AuthError,
    BatchsyncError,
    CredentialError,
    GraphError,
    GraphRequestError,
    GraphResponseError,
    GraphTimeoutError,
    ManifestError,
    ManifestProblem,
    ReportError,
    ThrottledError,
)


def classes_in_errors() -> list[type]:
    """Return every class defined in batchsync.errors."""
    return [
        member
        for _, member in inspect.getmembers(batchsync.errors, inspect.isclass)
        if member.__module__ == batchsync.errors.__name__
    ]


class TestHierarchy:
    """Every exception derives from BatchsyncError and, where one fits, a built-in."""

    @pytest.mark.parametrize(
        "cls",
        [cls for cls in classes_in_errors() if issubclass(cls, BaseException)],
        ids=lambda cls: cls.__name__,
    )
    def test_subclasses_root(self, cls: type) -> None:
        """The exception class derives from BatchsyncError."""
        assert issubclass(cls, BatchsyncError)

    def test_only_problem_is_not_exception(self) -> None:
        """ManifestProblem, a record inside ManifestError, is the module's only non-exception."""
        others = [cls for cls in classes_in_errors() if not issubclass(cls, BaseException)]

        assert others == [ManifestProblem]

    def test_walk_finds_every_exception(self) -> None:
        """The walk finds all ten exception classes the module exports."""
        exceptions = {cls for cls in classes_in_errors() if issubclass(cls, BaseException)}

        assert exceptions == {
            AuthError,
            BatchsyncError,
            CredentialError,
            GraphError,
            GraphRequestError,
            GraphResponseError,
            GraphTimeoutError,
            ManifestError,
            ReportError,
            ThrottledError,
        }

    def test_credential_error_is_lookup_error(self) -> None:
        """CredentialError is also a LookupError."""
        assert issubclass(CredentialError, LookupError)

    def test_report_error_is_os_error(self) -> None:
        """ReportError is also an OSError."""
        assert issubclass(ReportError, OSError)

    def test_timeout_is_timeout_error(self) -> None:
        """GraphTimeoutError is also a TimeoutError."""
        assert issubclass(GraphTimeoutError, TimeoutError)

    def test_timeout_is_request_error(self) -> None:
        """A timeout is a request that got no response, so it is a GraphRequestError."""
        assert issubclass(GraphTimeoutError, GraphRequestError)

    def test_throttled_is_response_error(self) -> None:
        """A throttled call got a response, so ThrottledError is a GraphResponseError."""
        assert issubclass(ThrottledError, GraphResponseError)

    @pytest.mark.parametrize(
        "cls", [GraphRequestError, GraphResponseError], ids=lambda cls: cls.__name__
    )
    def test_graph_errors_share_base(self, cls: type) -> None:
        """Both kinds of failed call derive from GraphError."""
        assert issubclass(cls, GraphError)


class TestMessages:
    """str() of each exception is the exact text shown to the user."""

    def test_batchsync_error(self) -> None:
        """The root error shows its message."""
        assert str(BatchsyncError("something failed")) == "something failed"

    def test_manifest_error_one_problem(self) -> None:
        """One problem gives a singular count line and the problem."""
        error = ManifestError([ManifestProblem("m.yaml", 3, 5, "auth.client_id", "not a GUID")])

        assert str(error) == "invalid manifest (1 problem):\nm.yaml:3:5: auth.client_id: not a GUID"

    def test_manifest_error_sorted(self) -> None:
        """Problems are listed by line and column, and one without a field has no field part."""
        error = ManifestError(
            [
                ManifestProblem("m.yaml", 9, 1, "targets[0].name", "must not be empty"),
                ManifestProblem("m.yaml", 1, 1, "", "the file is not UTF-8"),
                ManifestProblem("m.yaml", 9, 0, "targets[0]", "give exactly one"),
            ]
        )

        assert str(error) == (
            "invalid manifest (3 problems):\n"
            "m.yaml:1:1: the file is not UTF-8\n"
            "m.yaml:9:0: targets[0]: give exactly one\n"
            "m.yaml:9:1: targets[0].name: must not be empty"
        )

    def test_credential_error_with_fix(self) -> None:
        """A credential error shows the reference, the reason and the fix."""
        error = CredentialError("env: APP_SECRET", "is not set", fix="export it")

        assert str(error) == "env: APP_SECRET: is not set; export it"

    def test_credential_error_without_fix(self) -> None:
        """Without a fix the message ends at the reason."""
        assert str(CredentialError("file: key.pem", "is empty")) == "file: key.pem: is empty"

    def test_auth_error(self) -> None:
        """An auth error shows MSAL's error and the first line of its description."""
        error = AuthError(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1234",
            error_codes=(7000215,),
        )

        assert str(error) == (
            "authentication failed: invalid_client: AADSTS7000215: Invalid client secret provided."
        )

    def test_auth_error_without_description(self) -> None:
        """An empty description leaves no dangling separator."""
        assert str(AuthError("invalid_client", "  ")) == "authentication failed: invalid_client"

    def test_auth_error_keeps_final_colon(self) -> None:
        """A description whose first line ends in a colon keeps it."""
        error = AuthError("invalid_request", "Reasons:\n- the scope is wrong")

        assert str(error) == "authentication failed: invalid_request: Reasons:"

    def test_auth_error_code(self) -> None:
        """aadsts_code names the first Entra ID error code."""
        assert AuthError("invalid_client", "", error_codes=(7000215, 1)).aadsts_code == (
            "AADSTS7000215"
        )

    def test_auth_error_without_code(self) -> None:
        """aadsts_code is None when Entra ID sent no code."""
        assert AuthError("invalid_client", "").aadsts_code is None

    def test_report_error(self) -> None:
        """A report error names the file and the reason."""
        error = ReportError(Path("out/report.jsonl"), "No space left on device")

        assert str(error) == "cannot write report out/report.jsonl: No space left on device"

    def test_graph_error(self) -> None:
        """A Graph error shows its message and has the default code."""
        error = GraphError("the call failed")

        assert str(error) == "the call failed"
        assert error.code == "unknown"

    def test_request_error(self) -> None:
        """A request error shows its message and has the connection_error code."""
        error = GraphRequestError("connection refused by graph.microsoft.com:443")

        assert str(error) == "connection refused by graph.microsoft.com:443"
        assert error.code == "connection_error"

    def test_timeout_error(self) -> None:
        """A timeout shows its message, not an OSError errno format, and has the timeout code."""
        error = GraphTimeoutError("no answer within 30 s")

        assert str(error) == "no answer within 30 s"
        assert error.code == "timeout"

    def test_error_code_override(self) -> None:
        """A code given to the constructor replaces the class default."""
        assert GraphRequestError("TLS failed", code="tls_error").code == "tls_error"

    def test_response_error(self) -> None:
        """A response error shows status, Graph's code, message and request id."""
        error = GraphResponseError(
            404,
            "Request_ResourceNotFound",
            "Resource '0f1e' does not exist.",
            request_id="7d3c0b3e-0000-0000-0000-000000000000",
        )

        assert str(error) == (
            "HTTP 404 Request_ResourceNotFound: Resource '0f1e' does not exist. "
            "(request-id 7d3c0b3e-0000-0000-0000-000000000000)"
        )

    def test_response_error_bare(self) -> None:
        """Without a message or request id only the status and code are shown."""
        assert str(GraphResponseError(500, "InternalError", "")) == "HTTP 500 InternalError"

    def test_throttled_error(self) -> None:
        """A throttled error reads like a response error and keeps retry_after."""
        error = ThrottledError(429, "TooManyRequests", "Slow down", retry_after=2.0)

        assert str(error) == "HTTP 429 TooManyRequests: Slow down"
        assert error.retry_after == 2.0

    def test_problem_without_field(self) -> None:
        """A problem about the whole file has no field part."""
        assert str(ManifestProblem("m.yaml", 1, 1, "", "file not found")) == (
            "m.yaml:1:1: file not found"
        )
