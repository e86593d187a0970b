"""Records of the requests the emulator received, so tests can assert on what a client sent.

Records stay in memory only. They contain the credential values a client sent, which tests
compare against their input. For that reason ``CallRecord.credentials`` is left out of ``repr``,
and nothing in the emulator logs or prints a record. Client assertions are recorded only as a
SHA-256 digest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CallLog", "CallRecord", "Endpoint", "ObjectKind", "Stats"]

Endpoint = Literal["token", "openid", "graph", "instance_discovery", "managed_identity", "other"]
ObjectKind = Literal["servicePrincipal", "application"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request as received, and the emulator's response.

    ``status`` is 0 when the emulator dropped the connection instead of responding, or when the
    client went away before the response could be written. ``client_id`` is the client id a
    token request named, the managed identity a managed identity request got a token for, or
    the ``appid`` of the valid token a Graph request carried.
    ``assertion_sha256`` is the hex SHA-256 digest of a token request's client assertion.
    """

    at: float
    wall: float
    method: str
    path: str
    endpoint: Endpoint
    object_id: str | None = None
    object_kind: ObjectKind | None = None
    api_version: str | None = None
    status: int = 0
    fault: str | None = None
    client_request_id: str | None = None
    request_id: str | None = None
    credential_keys: tuple[str, ...] = ()
    credentials: dict[str, str] = field(default_factory=dict, repr=False, hash=False)
    user_agent: str | None = None
    throttle_percentage: str | None = None
    client_id: str | None = None
    assertion_sha256: str | None = None


@dataclass
class Stats:
    """Counters over every request since the start or the last reset."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    # Every 429 sent: Graph throttling, token endpoint throttling and injected 429s.
    throttled: int = 0
    token_requests: int = 0
    per_object: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


class CallLog:
    """Collects call records, counters and the access tokens minted."""

    def __init__(self) -> None:
        self._records: list[CallRecord] = []
        self.stats = Stats()
        self.issued_tokens: list[str] = []

    @property
    def calls(self) -> list[CallRecord]:
        """Records in arrival order.

        Records are stored when the response is sent, so a slow response is stored late. Sorting
        by arrival time restores the order, and costs little because the list is almost sorted.
        """
        return sorted(self._records, key=lambda record: record.at)

    def add(self, record: CallRecord) -> None:
        """Store a finished call and count it."""
        self._records.append(record)
        stats = self.stats
        stats.requests += 1
        stats.by_status[record.status] += 1
        if record.status == 429:
            stats.throttled += 1
        if record.endpoint == "token":
            stats.token_requests += 1
        if record.object_id is not None:
            stats.per_object[record.object_id] += 1
        if record.fault is not None:
            stats.faults[record.fault] += 1

    def reset(self) -> None:
        """Forget all records and counters.

        ``issued_tokens`` is kept, because those tokens stay valid and can still leak into
        a client's output after the reset.
        """
        self._records = []
        self.stats = Stats()
