"""Known secret values, and the structlog processor that blanks them out of log events.

This is the second line of defence: batchsync keeps values in :class:`~batchsync.credentials.Secret`
and never passes them to a logger, but a library's exception text or a future bug could. Values
the run must keep hidden for its whole life (the client secret, access tokens) are registered
permanently; a target's credential values are registered while that target is in flight, which
keeps the per-event scan short on runs of 100,000 targets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

__all__ = ["REDACTED", "in_flight", "redact_event", "redact_text", "register_secret"]

REDACTED = "***"

# Values shorter than this are blanked only where a whole field equals them: replacing every
# "True" or "1" inside longer text would garble logs without protecting anything.
MIN_SUBSTRING_LENGTH = 8

# Field names whose value is always blanked, whatever it is.
SENSITIVE_KEYS = frozenset(
    {
        "access_token",
        "authorization",
        "client_assertion",
        "client_secret",
        "password",
        "private_key",
        "refresh_token",
        "secret",
        "token",
        "value",
    }
)

_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")

_permanent: set[str] = set()
_in_flight: Counter[str] = Counter()


def register_secret(value: str) -> None:
    """Blank ``value`` from every later log event of this process."""
    if value:
        _permanent.add(value)


@contextmanager
def in_flight(values: Iterable[str]) -> Iterator[None]:
    """Blank ``values`` from log events while the ``with`` block runs."""
    held = [value for value in values if value]
    _in_flight.update(held)
    try:
        yield
    finally:
        _in_flight.subtract(held)
        for value in held:
            if _in_flight[value] <= 0:
                del _in_flight[value]


def redact_text(text: str) -> str:
    """Return ``text`` with every known secret, bearer token and JWT replaced by ``***``."""
    for value in _known_values():
        if value == text:
            return REDACTED
        if len(value) >= MIN_SUBSTRING_LENGTH and value in text:
            text = text.replace(value, REDACTED)
    text = _BEARER.sub(r"\1 " + REDACTED, text)

    return _JWT.sub(REDACTED, text)


def redact_event(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Structlog processor: blank secrets in every field, nested ones included."""
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(key, value)

    return event_dict


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in SENSITIVE_KEYS and value is not None and key != "event":
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, item) for item in value]

    return value


def _known_values() -> list[str]:
    # Replace longer values first. A value contained in a longer one, replaced first, would leave
    # the rest of the longer one visible.
    return sorted({*_permanent, *_in_flight}, key=len, reverse=True)
