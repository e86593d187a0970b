"""Injected faults: the choice of Graph requests that fail, and the broken responses.

Faults are chosen per request from the scenario's list, first match wins. Each decision
depends only on the seed, the fault's position, the object id and how many requests that
object has had, so a rerun fails the same requests however the client orders its calls.

Transport faults bypass aiohttp's response machinery. ``disconnect`` closes the connection
without a byte, which an aiohttp client reports as ``ServerDisconnectedError``. ``reset``
writes the start of a response and then sends a TCP RST, so the client sees a connection
reset in the middle of the headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence

from aiohttp import web

from batchsync.emulator.scenario import Fault, MalformedFault, SelectableFault, StormFault

__all__ = [
    "FaultPlan",
    "drop_connection",
    "malformed_response",
    "reset_connection",
]

# Status of each malformed response when the scenario gives none.
_MALFORMED_DEFAULT_STATUS = {
    "html": 502,
    "non_json": 500,
    "empty_body": 503,
    "truncated": 500,
    "unknown_status": 599,
}

_HTML_PAGE = (
    "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}"
    "</h1></center><hr><center>Microsoft-Azure-Application-Gateway/v2</center></body></html>"
)

# A reverse proxy's plain-text complaint, served with a JSON content type.
_NON_JSON_BODY = (
    "upstream connect error or disconnect/reset before headers. "
    "reset reason: connection termination"
)


class FaultPlan:
    """Chooses the fault, if any, for each Graph request."""

    def __init__(
        self, faults: Sequence[Fault], seed: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seed = seed
        self._clock = clock
        self._storms = [fault for fault in faults if isinstance(fault, StormFault)]
        # Storms are chosen by time, every other kind by the selectors.
        self._selectable: list[tuple[int, SelectableFault]] = [
            (index, fault)
            for index, fault in enumerate(faults)
            if not isinstance(fault, StormFault)
        ]
        self._calls_per_object: Counter[str] = Counter()
        self._first_request_at: float | None = None

    def note_request(self) -> None:
        """Mark the first Graph request, from which storm windows are timed."""
        if self._first_request_at is None:
            self._first_request_at = self._clock()

    def active_storm(self) -> StormFault | None:
        """Return the storm whose window contains the current time, if any."""
        if not self._storms or self._first_request_at is None:
            return None

        elapsed = self._clock() - self._first_request_at
        for storm in self._storms:
            if storm.start_seconds <= elapsed < storm.start_seconds + storm.duration_seconds:
                return storm

        return None

    def select(self, object_id: str) -> SelectableFault | None:
        """Count a request for ``object_id`` and return the first fault that selects it."""
        self._calls_per_object[object_id] += 1
        call_number = self._calls_per_object[object_id]
        for index, fault in self._selectable:
            if self._matches(fault, index, object_id, call_number):
                return fault

        return None

    def _matches(
        self, fault: SelectableFault, index: int, object_id: str, call_number: int
    ) -> bool:
        if fault.objects is not None and object_id not in fault.objects:
            return False
        if fault.calls is not None and call_number not in fault.calls:
            return False
        if fault.rate is not None:
            return self._draw(index, object_id, call_number) < fault.rate

        return True

    def _draw(self, index: int, object_id: str, call_number: int) -> float:
        """Return a number in [0, 1) fixed by the seed, the fault, the object and the call."""
        key = f"{self._seed}:{index}:{object_id}:{call_number}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()

        return int.from_bytes(digest, "big") / 2**64


def drop_connection(request: web.Request) -> None:
    """Close the connection without sending a response."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def reset_connection(request: web.Request, partial_response: bytes) -> None:
    """Write ``partial_response``, then abort the connection with a TCP RST."""
    transport = request.transport
    if transport is None:
        return

    transport.write(partial_response)
    # abort() discards unsent data, so give the event loop a moment to flush the bytes.
    for _ in range(50):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)

    raw_socket = transport.get_extra_info("socket")
    if raw_socket is not None:
        # A zero linger time makes close() send RST instead of FIN.
        raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def malformed_response(
    fault: MalformedFault, headers: dict[str, str], error_body: bytes
) -> web.Response:
    """Build the broken response of a malformed-body fault.

    ``error_body`` is the Graph error JSON the response would normally carry.
    """
    status = fault.status or _MALFORMED_DEFAULT_STATUS[fault.kind]
    response = web.Response(status=status, headers=headers)
    if fault.kind == "html":
        response.content_type = "text/html"
        response.text = _HTML_PAGE.format(status=status, reason=response.reason)
    elif fault.kind == "non_json":
        response.content_type = "application/json"
        response.text = _NON_JSON_BODY
    elif fault.kind == "empty_body":
        response.content_type = "application/json"
    elif fault.kind == "truncated":
        response.content_type = "application/json"
        response.body = error_body[: len(error_body) // 2]
    else:
        response.content_type = "application/json"
        response.body = error_body

    return response
