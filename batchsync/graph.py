"""One HTTP request to Graph's acquireAccessToken action, and nothing more.

This is the only module that touches aiohttp. It sends one POST and turns the response into a
:class:`GraphAnswer` or an exception: :class:`~batchsync.errors.GraphResponseError` when Graph
answered with an error (:class:`~batchsync.errors.ThrottledError` for 429, and for 503 with
``Retry-After``), :class:`~batchsync.errors.GraphRequestError` when no answer arrived. Retries,
token renewal and rate limiting are the caller's business (:mod:`batchsync.runner`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from batchsync._redaction import redact_text
from batchsync._version import __version__
from batchsync.credentials import Secret
from batchsync.errors import (
    GraphRequestError,
    GraphResponseError,
    GraphTimeoutError,
    ThrottledError,
)
from batchsync.manifest import Target
from batchsync.retry import parse_retry_after

__all__ = ["USER_AGENT", "GraphAnswer", "GraphClient", "request_body"]

USER_AGENT = f"batchsync/{__version__}"
# Error bodies longer than this are not read to the end; Graph's JSON errors are a few hundred bytes.
MAX_ERROR_BODY_BYTES = 64 * 1024
_PATHS = {"servicePrincipal": "servicePrincipals", "application": "applications"}


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """A successful response: its status (204, or another 2xx) and ids."""

    status: int
    request_id: str | None
    client_request_id: str
    limit_percentage: float | None


def request_body(credentials: Sequence[tuple[str, Secret]]) -> bytes:
    """Return the JSON body ``{"credentials": [{"key", "value"}, ...]}``; it contains secrets."""
    pairs = [{"key": key, "value": value.reveal()} for key, value in credentials]

    return json.dumps({"credentials": pairs}, ensure_ascii=False).encode("utf-8")


class GraphClient:
    """Sends acquireAccessToken requests over one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, graph_url: str, api_version: str) -> None:
        self._session = session
        self._base = f"{graph_url.rstrip('/')}/{api_version}"

    def url_for(self, target: Target) -> str:
        """Return the action URL for ``target``."""
        return f"{self._base}/{_PATHS[target.kind]}/{target.object_id}/synchronization/acquireAccessToken"

    async def post_acquire_access_token(
        self, target: Target, body: bytes, token: Secret, client_request_id: str
    ) -> GraphAnswer:
        """Send one request.

        Raises:
            GraphResponseError: Graph returned a status outside 2xx.
            GraphRequestError: the connection failed or closed before a whole response arrived.
            GraphTimeoutError: the attempt took longer than the session's timeout.
        """
        headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Content-Type": "application/json",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
            "User-Agent": USER_AGENT,
        }
        try:
            async with self._session.post(
                self.url_for(target), data=body, headers=headers, allow_redirects=False
            ) as response:
                return await _read_answer(response, client_request_id)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            message = "the request timed out (limits.request_timeout_seconds)"
            raise GraphTimeoutError(message) from None
        except aiohttp.ClientSSLError as exc:
            raise GraphRequestError(_describe(exc), code="tls_error") from None
        except aiohttp.ClientPayloadError as exc:
            message = f"the response was cut off: {_describe(exc)}"
            raise GraphRequestError(message, code="truncated_response") from None
        except aiohttp.ClientError as exc:
            raise GraphRequestError(_describe(exc)) from None


async def _read_answer(response: aiohttp.ClientResponse, client_request_id: str) -> GraphAnswer:
    request_id = response.headers.get("request-id")
    echoed = response.headers.get("client-request-id", client_request_id)
    if 200 <= response.status < 300:
        await response.read()
        return GraphAnswer(response.status, request_id, echoed, limit_percentage(response.headers))
    raw = await _read_error_body(response)
    code, message = _error_fields(response, raw)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    error_class = GraphResponseError
    if response.status == 429 or (response.status == 503 and retry_after is not None):
        error_class = ThrottledError

    raise error_class(
        response.status,
        code,
        message,
        request_id=request_id,
        client_request_id=echoed,
        retry_after=retry_after,
    )


async def _read_error_body(response: aiohttp.ClientResponse) -> bytes:
    # StreamReader.read(n) returns as soon as any bytes arrive, so one call can return only the
    # first TLS record of a body. Read until the end of the body or the limit.
    chunks: list[bytes] = []
    size = 0
    while size < MAX_ERROR_BODY_BYTES:
        chunk = await response.content.read(MAX_ERROR_BODY_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)

    return b"".join(chunks)


def limit_percentage(headers: CIMultiDictProxy[str]) -> float | None:
    """Return ``x-ms-throttle-limit-percentage`` as a fraction (0.85), or None."""
    value = headers.get("x-ms-throttle-limit-percentage")
    if value is None:
        return None
    try:
        number = float(value.strip().rstrip("%"))
    except ValueError:
        return None

    return number / 100 if number > 2 else number


def _error_fields(response: aiohttp.ClientResponse, raw: bytes) -> tuple[str, str]:
    fallback_code = f"http_{response.status}"
    if 300 <= response.status < 400:
        location = response.headers.get("Location", "")
        return (
            "unexpected_redirect",
            f"Graph answered with a redirect to {location!r}; batchsync does not follow redirects",
        )
    error = _graph_error(raw)
    if error is not None:
        code = str(error.get("code") or fallback_code)
        return code, redact_text(str(error.get("message") or ""))

    return fallback_code, _describe_body(response, raw)


def _describe_body(response: aiohttp.ClientResponse, raw: bytes) -> str:
    """Describe an error body that contains no Graph error: empty, cut off, or something else."""
    status = response.status
    if not raw:
        return f"HTTP {status} {response.reason or ''} with an empty body".replace("  ", " ")
    # The media type without parameters such as charset.
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    size = f"{len(raw)} bytes"
    if len(raw) >= MAX_ERROR_BODY_BYTES and not response.content.at_eof():
        size = f"more than {MAX_ERROR_BODY_BYTES} bytes"
    elif _looks_cut_off(raw):
        return f"HTTP {status} with a JSON body that is cut off ({media_type}, {size})"

    return f"HTTP {status} with a body that is not a Graph error ({media_type}, {size})"


def _graph_error(raw: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    error = document.get("error")

    return error if isinstance(error, dict) else None


def _looks_cut_off(raw: bytes) -> bool:
    """Return whether ``raw`` starts like a JSON object or array but does not end like one.

    Call it only for bodies that did not parse as JSON.
    """
    text = raw.strip()

    return text[:1] in (b"{", b"[") and text[-1:] not in (b"}", b"]")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__

    return redact_text(f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text)
