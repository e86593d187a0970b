"""Assemble and run one onboarding job: report, sign-in, HTTP session, worker pool, summary.

The order matters for "nothing lost, nothing called by surprise": the manifest is valid and the
report file is open before the first token request, and the token request succeeds before the
first Graph call. Whatever happens after that, every target gets exactly one report line and the
report ends with a summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp
import structlog

from batchsync._tls import ssl_context
from batchsync._version import __version__
from batchsync.auth import TokenProvider, build_client_application
from batchsync.errors import AuthError, CredentialError, ReportError
from batchsync.graph import GraphClient
from batchsync.log import get_logger, progress_stream
from batchsync.manifest import Manifest, Target
from batchsync.progress import Snapshot, show_progress
from batchsync.ratelimit import RateLimiter
from batchsync.report import ReportWriter, TargetResult, utc_now
from batchsync.report_reader import read_report
from batchsync.retry import RetryPolicy
from batchsync.runner import Runner, RunTotals, log_retry
from batchsync.shard import Shard

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REPORT",
    "EXIT_USAGE",
    "JobOptions",
    "run_job",
]

log = get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REPORT = 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Command-line choices that apply on top of the manifest."""

    report_path: Path
    concurrency: int | None = None
    rate: float | None = None
    grace_seconds: float = 20.0
    adaptive_rate: bool = True
    resume_from: Path | None = None
    shard: Shard | None = None


class _Signals:
    """Turn SIGINT and SIGTERM into an orderly stop, from the run line to the summary line.

    First signal: no new target starts, and what is in flight (the sign-in or the targets) may
    finish for the grace period, after which it is cancelled. Second signal: cancel now. Later
    signals change nothing. The handlers stay installed until the summary is written, so no
    signal kills the process while it writes the lines of the targets not finished.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.received: signal.Signals | None = None
        self._grace = grace_seconds
        self._runner: Runner | None = None
        self._sign_in: asyncio.Task[TokenProvider] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._cancel_requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for number in EXIT_SIGNAL:
            loop.add_signal_handler(number, self._on_signal, number)
        try:
            yield
        finally:
            for number in EXIT_SIGNAL:
                loop.remove_signal_handler(number)
            if self._deadline is not None:
                self._deadline.cancel()

    async def sign_in(self, manifest: Manifest) -> TokenProvider | None:
        """Sign in; return None when the grace period or a second signal cancelled the sign-in.

        Raises:
            AuthError: Entra ID refused the sign-in.
            CredentialError: the client secret or certificate does not resolve.
        """
        task = asyncio.create_task(_sign_in(manifest))
        self._sign_in = task
        if self._cancel_requested:
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return None
        finally:
            self._sign_in = None

    def watch(self, runner: Runner) -> None:
        """Apply the signals received so far, and any later ones, to ``runner``."""
        self._runner = runner
        if self.received is not None:
            runner.stop()
        if self._cancel_requested:
            runner.cancel()

    def _on_signal(self, number: signal.Signals) -> None:
        if self.received is not None:
            self._cancel(number, "second signal")
            return
        self.received = number
        log.warning("run.stopping", signal=number.name, grace_seconds=self._grace)
        if self._runner is not None:
            self._runner.stop()
        self._deadline = asyncio.get_running_loop().call_later(
            self._grace, self._cancel, number, "grace period over"
        )

    def _cancel(self, number: signal.Signals, reason: str) -> None:
        if self._cancel_requested:
            return
        self._cancel_requested = True
        log.warning("run.cancelling", signal=number.name, reason=reason)
        if self._runner is not None:
            self._runner.cancel()
        if self._sign_in is not None:
            self._sign_in.cancel()


async def run_job(manifest: Manifest, options: JobOptions, *, out: TextIO | None = None) -> int:
    """Run the targets of ``manifest`` (those of ``options.shard``); return the exit code.

    The summary for people goes to ``out`` (standard output by default).

    Raises:
        ReportError: the report cannot be created, or the report to resume from cannot be read;
            nothing was called.
    """
    out = out if out is not None else sys.stdout
    targets = list(options.shard.select(manifest.targets)) if options.shard else manifest.targets
    done = _done_targets(manifest, options.resume_from)
    report = ReportWriter(options.report_path)
    report.open(expected_targets=len(targets))
    try:
        return await _Job(manifest, options, report, targets, done, out).run()
    except ReportError as exc:
        # Targets may have been called already, so this is not the "nothing called" exit 2.
        log.error("report.write_failed", error=str(exc))  # noqa: TRY400 - the message says it all
        print(
            f"batchsync: {exc}; the run stopped, and targets may have been called: the report holds every line written before the failure",
            file=out,
        )
        return EXIT_REPORT
    finally:
        with contextlib.suppress(ReportError):
            report.close()


def _done_targets(manifest: Manifest, previous: Path | None) -> frozenset[tuple[str, str]]:
    if previous is None:
        return frozenset()
    contents = read_report(previous)
    earlier = (contents.run or {}).get("manifest_sha256")
    if earlier != manifest.sha256:
        # Targets are matched by name and object id, so an edited manifest still resumes. A
        # changed credential for a target already done is not sent again, though.
        log.warning("resume.manifest_changed", report=str(previous), manifest=str(manifest.path))

    return frozenset(contents.done())


class _Job:
    """One run of a manifest: the steps of :func:`run_job` once the report is open."""

    def __init__(
        self,
        manifest: Manifest,
        options: JobOptions,
        report: ReportWriter,
        targets: list[Target],
        done: frozenset[tuple[str, str]],
        out: TextIO,
    ) -> None:
        self.manifest = manifest
        self.options = options
        self.report = report
        self.targets = targets
        self.done = done
        self.out = out
        self.run_id = str(uuid.uuid4())
        self.concurrency = options.concurrency or manifest.limits.concurrency
        self.rate = options.rate or manifest.limits.requests_per_second
        self.signals = _Signals(options.grace_seconds)

    async def run(self) -> int:
        # Every event of the run carries its run_id, so a log store can group a run's events.
        with structlog.contextvars.bound_contextvars(run_id=self.run_id), self.signals.installed():
            return await self._run()

    async def _run(self) -> int:
        self.report.write_run(self._run_fields())
        log.info(
            "run.started",
            targets=len(self.targets),
            concurrency=self.concurrency,
            rate=self.rate,
            report=str(self.report.path),
        )
        # A resumed run with nothing left to do signs in to nothing and calls nothing.
        if all((t.name, t.object_id) in self.done for t in self.targets):
            return await self._run_targets(None)
        try:
            tokens = await self.signals.sign_in(self.manifest)
        except (AuthError, CredentialError) as exc:
            return _auth_failed(self.targets, self.report, self.run_id, exc, self.out)
        if tokens is None:
            # A signal ended the sign-in, so the runner starts stopped and cancels every target.
            return await self._run_targets(None)
        try:
            return await self._run_targets(tokens)
        finally:
            tokens.close()

    async def _run_targets(self, tokens: TokenProvider | None) -> int:
        limits = self.manifest.limits
        limiter = RateLimiter(self.rate, limits.burst or 1, adaptive=self.options.adaptive_rate)
        policy = RetryPolicy(
            max_attempts=limits.max_attempts,
            max_target_seconds=limits.max_target_seconds,
            max_retry_after_seconds=limits.max_retry_after_seconds,
            backoff_base_seconds=limits.backoff_base_seconds,
            backoff_max_seconds=limits.backoff_max_seconds,
            on_retry=log_retry,
        )
        async with _session(self.manifest, self.concurrency) as session:
            graph = GraphClient(session, self.manifest.endpoints.graph, self.manifest.api_version)
            runner = Runner(
                graph=graph,
                tokens=tokens,
                limiter=limiter,
                policy=policy,
                report=self.report,
                concurrency=self.concurrency,
                done=self.done,
            )
            self.signals.watch(runner)
            snapshot = functools.partial(_snapshot, runner, limiter, len(self.targets))
            async with show_progress(progress_stream(), snapshot):
                totals = await runner.run(self.targets)
            # A signal after the last target finished interrupted nothing.
            received = self.signals.received

        return _finish(self.report, self.run_id, totals, limiter, received, self.out)

    def _run_fields(self) -> dict[str, object]:
        manifest = self.manifest
        return {
            "run_id": self.run_id,
            "started_at": utc_now(),
            "manifest": str(manifest.path),
            "manifest_sha256": manifest.sha256,
            "batchsync_version": __version__,
            "tenant": manifest.tenant,
            "cloud": manifest.cloud,
            "targets": len(self.targets),
            "shard": str(self.options.shard) if self.options.shard else None,
            "resumed_from": str(self.options.resume_from) if self.options.resume_from else None,
        }


async def _sign_in(manifest: Manifest) -> TokenProvider:
    application = await asyncio.to_thread(
        build_client_application, manifest.auth, manifest.endpoints, manifest.tenant
    )
    tokens = TokenProvider(application, manifest.endpoints.scope)
    try:
        await tokens.get()
    except (AuthError, asyncio.CancelledError):
        tokens.close()
        raise

    return tokens


@contextlib.asynccontextmanager
async def _session(manifest: Manifest, concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    limits = manifest.limits
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ssl=ssl_context(manifest.endpoints.ca_bundle)
    )
    # sock_connect, not connect: aiohttp's connect timeout also counts the wait for a free pooled
    # connection, which is back-pressure, not a fault.
    timeout = aiohttp.ClientTimeout(
        total=limits.request_timeout_seconds, sock_connect=limits.connect_timeout_seconds
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=True
    ) as session:
        yield session


def _snapshot(runner: Runner, limiter: RateLimiter, total: int) -> Snapshot:
    totals = runner.totals
    return Snapshot(
        done=sum(totals.counts.values()),
        total=total,
        failed=totals.counts["failed"],
        requests=totals.requests,
        throttled=totals.throttled,
        paused=limiter.paused_until > time.monotonic(),
    )


def _auth_failed(
    targets: list[Target], report: ReportWriter, run_id: str, exc: Exception, out: TextIO
) -> int:
    code = exc.aadsts_code or exc.error if isinstance(exc, AuthError) else "credential_error"
    log.error("auth.failed", error=str(exc), aadsts=code)
    totals = RunTotals()
    for target in targets:
        report.write_target(_not_started(target, {"code": code, "message": str(exc)}))
        totals.counts["cancelled"] += 1
    report.write_summary(_summary_fields(run_id, totals, None, EXIT_AUTH, interrupted=False))
    print(f"batchsync: {exc}", file=out)
    print(f"  no target was called; report: {report.path}", file=out)

    return EXIT_AUTH


def _not_started(target: Target, error: dict[str, str]) -> TargetResult:
    return TargetResult(
        name=target.name, kind=target.kind, object_id=target.object_id, status="cancelled",
        http_status=None, error=error, attempts=0, throttled=0, request_id=None,
        client_request_id=None, started_at=None, finished_at=utc_now(), duration_ms=None,
    )  # fmt: skip


def _finish(
    report: ReportWriter, run_id: str, totals: RunTotals, limiter: RateLimiter,
    received: signal.Signals | None, out: TextIO,
) -> int:  # fmt: skip
    exit_code = EXIT_FAILED if totals.counts["failed"] else EXIT_OK
    if received is not None:
        exit_code = EXIT_SIGNAL[received]
    report.write_summary(
        _summary_fields(run_id, totals, limiter, exit_code, interrupted=received is not None)
    )
    log.info("run.finished", exit_code=exit_code, **dict(totals.counts))
    _print_summary(report.path, totals, limiter, out)

    return exit_code


def _summary_fields(
    run_id: str,
    totals: RunTotals,
    limiter: RateLimiter | None,
    exit_code: int,
    *,
    interrupted: bool,
) -> dict[str, object]:
    elapsed = totals.elapsed_seconds
    return {
        "run_id": run_id,
        "finished_at": utc_now(),
        "counts": {
            status: totals.counts.get(status, 0)
            for status in ("succeeded", "failed", "cancelled", "skipped")
        },
        "requests": totals.requests,
        "throttled": totals.throttled,
        "paused_seconds": round(limiter.stats.paused_seconds, 3) if limiter else 0.0,
        "elapsed_seconds": round(elapsed, 3),
        "requests_per_second": round(totals.requests / elapsed, 2) if elapsed > 0 else 0.0,
        "exit_code": exit_code,
        "interrupted": interrupted,
    }


def _print_summary(path: Path, totals: RunTotals, limiter: RateLimiter, out: TextIO) -> None:
    counts = totals.counts
    total = sum(counts.values())
    parts = ", ".join(
        f"{counts[s]} {s}" for s in ("succeeded", "failed", "cancelled", "skipped") if counts[s]
    )
    print(
        f"batchsync: {total} targets in {totals.elapsed_seconds:.1f} s: {parts or 'nothing to do'}",
        file=out,
    )
    if totals.failures:
        by_code = ", ".join(f"{code} {n}" for code, n in totals.failures.most_common())
        print(f"  failures by error code: {by_code}", file=out)
    rate = totals.requests / totals.elapsed_seconds if totals.elapsed_seconds > 0 else 0.0
    print(
        f"  requests: {totals.requests} ({totals.throttled} throttled, paused {limiter.stats.paused_seconds:.1f} s, {rate:.1f} requests/s)",
        file=out,
    )
    print(f"  report: {path}", file=out)
