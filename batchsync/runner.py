"""The worker pool: call acquireAccessToken for every target and write one report line each.

A fixed number of worker tasks pull targets from one shared iterator, so the number of tasks,
open requests and resolved credentials in memory depends on the concurrency, never on the number
of targets. The call path is layered one concern per method::

    process_target            resolve credentials, write the report line, log the outcome
    └── _with_retries         tenacity: retry what is worth retrying, wait as Graph requests
        └── _with_token       a valid token; one renewal and retry after a 401
            └── _with_rate_limit   the run's shared rate limit and cooperative pause
                └── GraphClient.post_acquire_access_token   one HTTP request

Targets that an earlier report shows as done (``--resume``) get a ``skipped`` line and no call.
When the run is stopped (:meth:`Runner.stop`), workers take no new target. :meth:`Runner.cancel`
also cancels the targets in flight. Every target not finished gets a ``cancelled`` line, so the
report always has exactly one line per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import structlog
from tenacity import RetryCallState

from batchsync._redaction import in_flight
from batchsync.auth import AccessToken, TokenProvider
from batchsync.credentials import Secret, resolve
from batchsync.errors import (
    AuthError,
    CredentialError,
    GraphError,
    GraphRequestError,
    GraphResponseError,
    ThrottledError,
)
from batchsync.graph import GraphAnswer, GraphClient, request_body
from batchsync.log import get_logger
from batchsync.manifest import Target
from batchsync.ratelimit import RateLimiter
from batchsync.report import ReportWriter, TargetResult, TargetStatus, utc_now
from batchsync.retry import RetryPolicy, TargetProgress

__all__ = ["RunTotals", "Runner", "log_retry"]

log = get_logger(__name__)

PERMISSION_HINT = (
    "Graph returned 401 UnknownError with an empty message even with a fresh token; the app "
    "most likely lacks the Synchronization.ReadWrite.All application permission (grant it and "
    "give admin consent)"
)


@dataclass(slots=True)
class RunTotals:
    """Counts of a finished or stopped run, for the summary line."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    throttled: int = 0
    elapsed_seconds: float = 0.0


class Runner:
    """Runs one job's targets through a bounded pool of workers."""

    def __init__(
        self,
        *,
        graph: GraphClient,
        tokens: TokenProvider | None,
        limiter: RateLimiter,
        policy: RetryPolicy,
        report: ReportWriter,
        concurrency: int,
        done: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self._graph = graph
        self._tokens = tokens
        self._limiter = limiter
        self._policy = policy
        self._report = report
        self._concurrency = concurrency
        self._done = done
        self._stopping = asyncio.Event()
        self._cancelled = False
        self._workers: list[asyncio.Task[None]] = []
        self.totals = RunTotals()

    @property
    def stopping(self) -> bool:
        """Return whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Take no new target; targets in flight go on until they finish or are cancelled."""
        self._stopping.set()

    def cancel(self) -> None:
        """Stop, and cancel the targets in flight; :meth:`run` still writes every line.

        Safe to call at any time and more than once, also before :meth:`run` starts or after
        it returns. It cancels only the workers, never the task running :meth:`run`, so it
        cannot interrupt :meth:`run` while that writes the lines of the targets not finished.
        """
        self.stop()
        self._cancelled = True
        for worker in self._workers:
            worker.cancel()

    async def run(self, targets: Iterable[Target]) -> RunTotals:
        """Process every target and write its report line; return the totals."""
        started = time.monotonic()
        pending = iter(targets)
        workers = [asyncio.create_task(self._worker(pending)) for _ in range(self._concurrency)]
        self._workers = workers
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            # cancel() cancels the workers, and gather passes that on as CancelledError. A
            # cancellation of the task running this method still reaches the caller.
            if not self._cancelled or _cancelling():
                raise
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for target in pending:
                self._write(
                    _cancelled(
                        target, None, TargetProgress(), "the run stopped before this target started"
                    )
                )
            self.totals.elapsed_seconds = time.monotonic() - started

        return self.totals

    async def _worker(self, pending: Iterator[Target]) -> None:
        for target in pending:
            if (target.name, target.object_id) in self._done:
                self._write(_skipped(target))
                continue
            if self.stopping:
                self._write(
                    _cancelled(
                        target, None, TargetProgress(), "the run stopped before this target started"
                    )
                )
                continue
            await self.process_target(target)

    async def process_target(self, target: Target) -> TargetResult:
        """Call acquireAccessToken for ``target`` and write its one report line."""
        started_at, started = utc_now(), time.monotonic()
        progress = TargetProgress()
        # The credential values stay registered for redaction until the outcome is logged, so
        # that a value quoted in an exception message is blanked from the log as well.
        with (
            structlog.contextvars.bound_contextvars(target=target.name, object_id=target.object_id),
            contextlib.ExitStack() as secrets,
        ):
            log.debug("target.started")
            try:
                credentials = [(key, resolve(reference)) for key, reference in target.credentials]
                secrets.enter_context(in_flight(value.reveal() for _, value in credentials))
                answer = await self._with_retries(target, credentials, progress)
                result = _succeeded(target, started_at, started, progress, answer)
            except asyncio.CancelledError:
                self._write(
                    _cancelled(
                        target,
                        started_at,
                        progress,
                        "the run stopped while this target was in flight",
                        started,
                    )
                )
                raise
            except (GraphError, CredentialError, AuthError) as exc:
                result = _failed(target, started_at, started, progress, *self._error_fields(exc))
            except Exception as exc:
                log.exception("target.internal_error")
                result = _failed(
                    target,
                    started_at,
                    started,
                    progress,
                    None,
                    "internal_error",
                    f"{type(exc).__name__} in batchsync; see the log",
                )
            self._write(result)

        return result

    async def _with_retries(
        self, target: Target, credentials: list[tuple[str, Secret]], progress: TargetProgress
    ) -> GraphAnswer:
        body = request_body(credentials)
        async for attempt in self._policy.controller(progress):
            with attempt:
                return await self._with_token(target, body, progress)
        message = "unreachable: tenacity re-raises the last error"
        raise AssertionError(message)  # pragma: no cover

    async def _with_token(
        self, target: Target, body: bytes, progress: TargetProgress
    ) -> GraphAnswer:
        tokens = self._tokens
        if tokens is None:
            message = "the run did not sign in because every target was already done"
            raise AuthError("not_signed_in", message)
        token = await tokens.get()
        try:
            return await self._with_rate_limit(target, body, token, progress)
        except GraphResponseError as exc:
            if exc.status != 401:
                raise
            renewed = await tokens.renew_after_rejection(token)
            if renewed is None:
                raise _unauthorized(exc) from None
        try:
            return await self._with_rate_limit(target, body, renewed, progress)
        except GraphResponseError as exc:
            if exc.status == 401:
                raise _unauthorized(exc) from None
            raise

    async def _with_rate_limit(
        self, target: Target, body: bytes, token: AccessToken, progress: TargetProgress
    ) -> GraphAnswer:
        await self._limiter.acquire()
        client_request_id = str(uuid.uuid4())
        self.totals.requests += 1
        try:
            answer = await self._graph.post_acquire_access_token(
                target, body, token.value, client_request_id
            )
        except GraphResponseError as exc:
            progress.record(exc.status, exc.request_id, exc.client_request_id or client_request_id)
            self._on_error_answer(exc)
            raise
        except GraphRequestError:
            progress.record(None, None, client_request_id)
            raise
        progress.record(answer.status, answer.request_id, answer.client_request_id)
        self._limiter.on_response(answer.limit_percentage)

        return answer

    def _on_error_answer(self, exc: GraphResponseError) -> None:
        if exc.status == 429:
            self.totals.throttled += 1
            self._limiter.on_throttled()
        retry_after = exc.retry_after if isinstance(exc, ThrottledError) else None
        # A Retry-After beyond the maximum fails this target; it must not stall the whole pool.
        if retry_after is not None and retry_after <= self._policy.max_retry_after_seconds:
            self._limiter.pause(retry_after)

    def _error_fields(self, exc: Exception) -> tuple[int | None, str, str]:
        if isinstance(exc, GraphResponseError):
            message = exc.message or f"HTTP {exc.status} {exc.code} with an empty message"
            retry_after = exc.retry_after
            maximum = self._policy.max_retry_after_seconds
            if retry_after is not None and retry_after > maximum:
                message = f"{message}; Graph asked to wait {retry_after:g} s, longer than limits.max_retry_after_seconds ({maximum:g} s), so the target was not retried"
            return exc.status, exc.code, message
        if isinstance(exc, GraphError):
            return None, exc.code, exc.message
        if isinstance(exc, CredentialError):
            return None, "credential_error", str(exc)

        return None, "auth_error", str(exc)

    def _write(self, result: TargetResult) -> None:
        self._report.write_target(result)
        self.totals.counts[result.status] += 1
        if result.status == "failed" and result.error is not None:
            self.totals.failures[result.error["code"]] += 1
        _log_outcome(result)


def _cancelling() -> bool:
    """Return whether the current task has a pending cancellation request."""
    task = asyncio.current_task()

    return task is not None and task.cancelling() > 0


def log_retry(state: RetryCallState, wait: float) -> None:
    """Log one retry; tenacity calls it from ``before_sleep``."""
    error = state.outcome.exception() if state.outcome else None
    log.info(
        "graph.request.retrying",
        attempt=state.attempt_number,
        http_status=getattr(error, "status", None),
        graph_error_code=getattr(error, "code", None),
        request_id=getattr(error, "request_id", None),
        retry_after_s=getattr(error, "retry_after", None),
        wait_s=round(wait, 3),
    )


def _unauthorized(exc: GraphResponseError) -> GraphResponseError:
    if exc.code == "UnknownError" and not exc.message:
        return GraphResponseError(
            401,
            "permission_denied",
            PERMISSION_HINT,
            request_id=exc.request_id,
            client_request_id=exc.client_request_id,
        )

    return exc


def _succeeded(
    target: Target, started_at: str, started: float, progress: TargetProgress, answer: GraphAnswer
) -> TargetResult:
    return _result(target, "succeeded", started_at, started, progress, answer.status, None)


def _failed(
    target: Target,
    started_at: str,
    started: float,
    progress: TargetProgress,
    status: int | None,
    code: str,
    message: str,
) -> TargetResult:
    return _result(
        target, "failed", started_at, started, progress, status, {"code": code, "message": message}
    )


def _skipped(target: Target) -> TargetResult:
    return _result(target, "skipped", None, None, TargetProgress(), None, None)


def _cancelled(
    target: Target,
    started_at: str | None,
    progress: TargetProgress,
    message: str,
    started: float | None = None,
) -> TargetResult:
    error = {"code": "cancelled", "message": message}
    return _result(
        target,
        "cancelled",
        started_at,
        started,
        progress,
        progress.statuses[-1] if progress.statuses else None,
        error,
    )


def _result(
    target: Target,
    status: TargetStatus,
    started_at: str | None,
    started: float | None,
    progress: TargetProgress,
    http_status: int | None,
    error: dict[str, str] | None,
) -> TargetResult:
    return TargetResult(
        name=target.name,
        kind=target.kind,
        object_id=target.object_id,
        status=status,
        http_status=http_status,
        error=error,
        attempts=progress.attempts,
        throttled=progress.throttled,
        request_id=progress.request_id,
        client_request_id=progress.client_request_id,
        started_at=started_at,
        finished_at=utc_now(),
        duration_ms=round((time.monotonic() - started) * 1000) if started is not None else None,
    )


def _log_outcome(result: TargetResult) -> None:
    fields = {
        "target": result.name,
        "object_id": result.object_id,
        "http_status": result.http_status,
        "attempts": result.attempts,
        "request_id": result.request_id,
        "elapsed_ms": result.duration_ms,
    }
    if result.status == "succeeded":
        log.info("target.completed", **fields)
    elif result.status == "failed" and result.error is not None:
        log.error(
            "target.failed",
            graph_error_code=result.error["code"],
            error=result.error["message"],
            **fields,
        )
    elif result.status == "skipped":
        log.info("target.skipped", **fields)
    else:
        log.warning(f"target.{result.status}", **fields)
