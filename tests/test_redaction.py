"""Tests for blanking secrets, bearer tokens and JWTs out of log text and log events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

import batchsync._redaction
from batchsync._redaction import (
    MIN_SUBSTRING_LENGTH,
    REDACTED,
    in_flight,
    redact_event,
    redact_text,
    register_secret,
)

PERMANENT = "canary-Permanent-5d1e"
TARGET_SECRET = "canary-Target-93b0aa"
# Three base64url parts, as in a JWT. The signature is made up.
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ"


@pytest.fixture(autouse=True, name="fresh_registries")
def fixture_fresh_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test empty secret registries, so no value leaks from one test to the next."""
    monkeypatch.setattr(batchsync._redaction, "_permanent", set())
    monkeypatch.setattr(batchsync._redaction, "_in_flight", Counter())


@pytest.fixture(autouse=True, name="reset_structlog")
def fixture_reset_structlog() -> Iterator[None]:
    """Restore structlog's default configuration after each test."""
    yield
    structlog.reset_defaults()


def redact(**event: Any) -> Any:
    """Run redact_event on an event built from keyword arguments."""
    return redact_event(None, "info", event)


class TestRedactText:
    """redact_text blanks known secrets and token-shaped strings."""

    def test_registered_secret(self) -> None:
        """A registered secret is replaced wherever it appears."""
        register_secret(PERMANENT)

        assert redact_text(f"sent {PERMANENT} twice: {PERMANENT}") == "sent *** twice: ***"

    def test_in_flight_secret(self) -> None:
        """A secret is blanked while its target is in flight."""
        with in_flight([TARGET_SECRET]):
            assert redact_text(f"value={TARGET_SECRET}") == "value=***"

    def test_in_flight_released(self) -> None:
        """Once the block ends, the target's secret is no longer tracked."""
        with in_flight([TARGET_SECRET]):
            pass

        assert redact_text(f"value={TARGET_SECRET}") == f"value={TARGET_SECRET}"

    def test_in_flight_released_on_error(self) -> None:
        """The secret is released even when the block raises."""
        with pytest.raises(RuntimeError), in_flight([TARGET_SECRET]):
            raise RuntimeError

        assert batchsync._redaction._in_flight == Counter()

    def test_overlapping_in_flight(self) -> None:
        """Two targets sharing a value keep it blanked until both are done."""
        with in_flight([TARGET_SECRET]):
            with in_flight([TARGET_SECRET]):
                pass
            assert redact_text(TARGET_SECRET) == REDACTED

    def test_short_value_exact_match(self) -> None:
        """A value shorter than MIN_SUBSTRING_LENGTH is blanked when it is the whole text."""
        short = "x" * (MIN_SUBSTRING_LENGTH - 1)
        register_secret(short)

        assert redact_text(short) == REDACTED

    def test_short_value_not_substring(self) -> None:
        """A short value inside longer text is left alone, so common words are not garbled."""
        register_secret("True")

        assert redact_text("retry=True attempt=2") == "retry=True attempt=2"

    def test_value_at_threshold_substring(self) -> None:
        """A value of exactly MIN_SUBSTRING_LENGTH characters is blanked inside text."""
        value = "s" * MIN_SUBSTRING_LENGTH
        register_secret(value)

        assert redact_text(f"a {value} b") == "a *** b"

    def test_empty_value_ignored(self) -> None:
        """Registering an empty string blanks nothing."""
        register_secret("")
        with in_flight([""]):
            assert redact_text("") == ""

    def test_longer_secret_first(self) -> None:
        """A secret containing another is blanked whole, leaving none of its tail."""
        register_secret("abcdefgh")
        with in_flight(["abcdefgh-ijklmnop"]):
            assert redact_text("key abcdefgh-ijklmnop end") == "key *** end"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("Authorization: Bearer abc.DEF-123_~+/==", "Authorization: Bearer ***", id="header"),
            pytest.param("auth: bearer tok3n", "auth: bearer ***", id="lower-case"),
            pytest.param("BEARER\ttok3n rest", "BEARER *** rest", id="tab"),
        ],
    )  # fmt: skip
    def test_bearer_token(self, text: str, expected: str) -> None:
        """The token after "Bearer" is blanked, and the scheme name stays."""
        assert redact_text(text) == expected

    def test_jwt(self) -> None:
        """A JWT-shaped string is blanked even when no one registered it."""
        assert redact_text(f"token {JWT} issued") == "token *** issued"

    def test_plain_text_unchanged(self) -> None:
        """Text with no secret, bearer token or JWT comes back unchanged."""
        text = "target.completed status=204 attempts=1"

        assert redact_text(text) == text


class TestRedactEvent:
    """redact_event blanks secrets in every field of a structlog event."""

    @pytest.mark.parametrize(
        "key", ["access_token", "Authorization", "client_secret", "password", "token", "value"]
    )
    def test_sensitive_key(self, key: str) -> None:
        """A field with a sensitive name is blanked whatever it holds."""
        assert redact(**{key: "anything at all"})[key] == REDACTED

    def test_sensitive_key_none_kept(self) -> None:
        """A sensitive field that is None stays None, which shows it was absent."""
        assert redact(token=None)["token"] is None

    def test_event_name_kept(self) -> None:
        """The event name is never blanked by its key."""
        assert redact(event="target.completed")["event"] == "target.completed"

    def test_event_text_redacted(self) -> None:
        """A registered secret inside the event text is blanked."""
        register_secret(PERMANENT)

        assert redact(event=f"failed with {PERMANENT}")["event"] == "failed with ***"

    def test_nested_mapping(self) -> None:
        """Sensitive keys and secrets are found inside nested mappings."""
        register_secret(PERMANENT)

        event = redact(request={"headers": {"Authorization": "x"}, "body": f"s={PERMANENT}"})

        assert event["request"] == {"headers": {"Authorization": REDACTED}, "body": "s=***"}

    def test_nested_list(self) -> None:
        """Secrets are found inside lists and tuples, which both come back as lists."""
        event = redact(attempts=["Bearer tok3n", JWT, ("ok", {"password": "p"})])

        assert event["attempts"] == ["Bearer ***", REDACTED, ["ok", {"password": REDACTED}]]

    def test_other_values_kept(self) -> None:
        """Numbers, booleans and None pass through untouched."""
        event = redact(status=429, retry_after_s=2.0, throttled=True, request_id=None)

        assert event == {"status": 429, "retry_after_s": 2.0, "throttled": True, "request_id": None}

    def test_capture_logs(self) -> None:
        """Through structlog, a logged secret reaches the output blanked."""
        with in_flight([TARGET_SECRET]), capture_logs(processors=[redact_event]) as logs:
            structlog.get_logger().warning(
                "graph.request.failed", detail=f"body echoed {TARGET_SECRET}", client_secret="s"
            )

        assert logs == [
            {
                "event": "graph.request.failed",
                "detail": "body echoed ***",
                "client_secret": REDACTED,
                "log_level": "warning",
            }
        ]
