"""SIGTERM and SIGINT sent to a real ``batchsync run`` process in the middle of a run.

Each test starts an emulator on 127.0.0.1, runs the CLI as a subprocess against it, and sends
the signal once the report shows a few finished targets, as Kubernetes does when it stops a pod.
The helpers here are shared with ``test_resume.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchsync.emulator import Emulator

from .conftest import (
    CANARY_CLIENT_ID,
    CANARY_SECRET,
    CLIENT_SECRET,
    batchsync_command,
    manifest_for,
    object_id,
    sp_target,
)

TARGETS = 60
# The first targets respond at once and the others hang, so a run has calls in flight to stop.
FAST_TARGETS = 4
IN_FLIGHT_MESSAGE = "the run stopped while this target was in flight"
NOT_STARTED_MESSAGE = "the run stopped before this target started"


@dataclass
class Finished:
    """A ``batchsync run`` process that has exited, with what it left behind."""

    exit_code: int
    report_path: Path
    stdout: str
    stderr: str
    # Seconds from the (first) signal to the exit of the process.
    seconds_to_exit: float
    signalled_at: float

    @property
    def records(self) -> list[dict[str, Any]]:
        """Return every report line, parsed."""
        return read_records(self.report_path)

    @property
    def targets(self) -> list[dict[str, Any]]:
        """Return the target lines in the order they were written."""
        return [record for record in self.records if record["record"] == "target"]

    @property
    def summary(self) -> dict[str, Any]:
        """Return the summary line, which must be the last line."""
        last = self.records[-1]
        assert last["record"] == "summary", f"the last report line is {last['record']!r}"
        return last


def read_records(path: Path) -> list[dict[str, Any]]:
    """Return every line of the report at ``path``, parsed."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def child_environment() -> dict[str, str]:
    """Return the environment of a child run, with the canary variables the manifest names."""
    return {
        **os.environ,
        "BATCHSYNC_TEST_CLIENT_SECRET": CLIENT_SECRET,
        "TEST_CLIENT_IDENTIFIER": CANARY_CLIENT_ID,
        "TEST_CLIENT_SECRET_VALUE": CANARY_SECRET,
    }


def write_manifest(
    emulator: Emulator, path: Path, count: int = TARGETS, **overrides: Any
) -> list[str]:
    """Write a manifest of ``count`` targets pointing at ``emulator``; return their object ids."""
    targets = [sp_target(number) for number in range(count)]
    manifest = manifest_for(emulator, targets, **overrides)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")

    return [object_id(number) for number in range(count)]


def slow_fault(delay_seconds: float = 30.0) -> dict[str, Any]:
    """Return a fault that delays every target after the first FAST_TARGETS by ``delay_seconds``."""
    return {
        "kind": "slow",
        "delay_seconds": delay_seconds,
        "objects": [object_id(number) for number in range(FAST_TARGETS, TARGETS)],
    }


async def start_run(
    tmp_path: Path, manifest: Path, report: Path, *arguments: str
) -> asyncio.subprocess.Process:
    """Start ``batchsync run MANIFEST --report REPORT ARGUMENTS`` with output in files.

    Files, not pipes, take the child's output, so a child that logs a lot never blocks on a
    full pipe while the test waits for it.
    """
    command = batchsync_command("run", str(manifest), "--report", str(report), *arguments)
    with (
        (tmp_path / f"{report.stem}.stdout").open("wb") as stdout,
        (tmp_path / f"{report.stem}.stderr").open("wb") as stderr,
    ):
        return await asyncio.create_subprocess_exec(
            *command, env=child_environment(), stdout=stdout, stderr=stderr
        )


def report_text(path: Path) -> str:
    """Return the text of the report at ``path``, or "" while it does not exist."""
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def wait_for_report(
    process: asyncio.subprocess.Process,
    report: Path,
    condition: Callable[[str], bool],
    what: str,
) -> None:
    """Wait until the text of ``report`` meets ``condition``; fail the test after 8 s."""
    try:
        async with asyncio.timeout(8):
            while not condition(report_text(report)):
                if process.returncode is not None:
                    pytest.fail(f"batchsync exited with {process.returncode} before {what}")
                await asyncio.sleep(0.005)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{report} did not show {what} within 8 s")


async def wait_for_target_lines(
    process: asyncio.subprocess.Process, report: Path, count: int
) -> None:
    """Wait until ``report`` has at least ``count`` target lines."""
    await wait_for_report(
        process,
        report,
        lambda text: text.count('"record":"target"') >= count,
        f"{count} target lines",
    )


async def finish(
    process: asyncio.subprocess.Process, tmp_path: Path, report: Path, signalled_at: float
) -> Finished:
    """Wait for ``process`` to exit (10 s at most) and collect its outputs."""
    try:
        exit_code = await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("batchsync did not exit within 10 s of the signal")
    seconds = time.monotonic() - signalled_at
    stdout = (tmp_path / f"{report.stem}.stdout").read_text(encoding="utf-8")
    stderr = (tmp_path / f"{report.stem}.stderr").read_text(encoding="utf-8")

    return Finished(exit_code, report, stdout, stderr, seconds, signalled_at)


async def interrupted_run(
    tmp_path: Path,
    emulator: Emulator,
    number: signal.Signals,
    *,
    grace_seconds: float = 5.0,
    second_signal_after: float | None = None,
    lines_before_signal: int = FAST_TARGETS,
) -> Finished:
    """Run a 60-target manifest, signal it once some targets finished, and wait for the exit."""
    manifest = tmp_path / "manifest.yaml"
    report = tmp_path / "reports" / "interrupted.jsonl"
    write_manifest(emulator, manifest)
    process = await start_run(tmp_path, manifest, report, "--grace-seconds", str(grace_seconds))
    await wait_for_target_lines(process, report, lines_before_signal)
    process.send_signal(number)
    signalled_at = time.monotonic()
    if second_signal_after is not None:
        await asyncio.sleep(second_signal_after)
        process.send_signal(number)

    return await finish(process, tmp_path, report, signalled_at)


def assert_one_line_per_target(finished: Finished, count: int = TARGETS) -> None:
    """Check that every target of the manifest has exactly one report line."""
    names = [line["name"] for line in finished.targets]
    assert len(names) == count
    assert set(names) == {f"app-{number:05d}" for number in range(count)}


def graph_object_ids(emulator: Emulator, since: float = 0.0) -> list[str]:
    """Return the object id of every Graph call that arrived after ``since`` (monotonic)."""
    return [
        call.object_id
        for call in emulator.calls
        if call.endpoint == "graph" and call.object_id is not None and call.at >= since
    ]


EXIT_CODES = [(signal.SIGTERM, 143), (signal.SIGINT, 130)]
SIGNAL_IDS = ["SIGTERM", "SIGINT"]


class TestFirstSignal:
    """The first signal stops the run: no new target, calls in flight finish, exit 143 or 130."""

    @pytest.mark.parametrize(("number", "exit_code"), EXIT_CODES, ids=SIGNAL_IDS)
    async def test_signal_mid_run(self, start_emulator, tmp_path, number, exit_code):
        """Finished targets stay succeeded, the rest are cancelled, and the summary records the signal."""
        emulator = await start_emulator(latency_ms=300)
        finished = await interrupted_run(tmp_path, emulator, number)

        assert finished.exit_code == exit_code
        assert_one_line_per_target(finished)
        statuses = Counter(line["status"] for line in finished.targets)
        assert set(statuses) == {"succeeded", "cancelled"}
        assert statuses["succeeded"] >= FAST_TARGETS
        summary = finished.summary
        assert summary["interrupted"] is True
        assert summary["exit_code"] == exit_code
        assert summary["counts"]["succeeded"] == statuses["succeeded"]
        assert summary["counts"]["cancelled"] == statuses["cancelled"]
        assert f"{statuses['cancelled']} cancelled" in finished.stdout

    async def test_calls_in_flight_finish(self, start_emulator, tmp_path):
        """Every call that reached Graph ends succeeded, and the run exits without waiting out the grace period."""
        emulator = await start_emulator(latency_ms=300)
        finished = await interrupted_run(tmp_path, emulator, signal.SIGTERM, grace_seconds=5)

        succeeded = {
            line["object_id"] for line in finished.targets if line["status"] == "succeeded"
        }
        called = graph_object_ids(emulator)
        assert sorted(called) == sorted(succeeded)
        assert finished.summary["requests"] == len(called)
        # Calls take 0.3 s, so the stop waits for them and not for the 5 s grace period.
        assert finished.seconds_to_exit < 3

    async def test_no_target_starts_after_signal(self, start_emulator, tmp_path):
        """Targets not started when the signal came are cancelled without a call."""
        emulator = await start_emulator(latency_ms=300)
        finished = await interrupted_run(tmp_path, emulator, signal.SIGTERM)

        cancelled = [line for line in finished.targets if line["status"] == "cancelled"]
        assert cancelled
        called = set(graph_object_ids(emulator))
        for line in cancelled:
            assert line["object_id"] not in called
            assert line["error"] == {"code": "cancelled", "message": NOT_STARTED_MESSAGE}
            assert line["attempts"] == 0
            assert line["started_at"] is None
        # A call may already be on its way when the signal arrives, but none starts later.
        late = graph_object_ids(emulator, since=finished.signalled_at + 0.2)
        assert late == []

    async def test_grace_period_then_cancel(self, start_emulator, tmp_path):
        """Calls still hanging when the grace period ends are cancelled, and the run exits soon after."""
        emulator = await start_emulator(faults=[slow_fault()])
        finished = await interrupted_run(tmp_path, emulator, signal.SIGTERM, grace_seconds=1)

        assert finished.exit_code == 143
        assert_one_line_per_target(finished)
        assert 1 <= finished.seconds_to_exit < 4
        in_flight = [
            line
            for line in finished.targets
            if line["error"] == {"code": "cancelled", "message": IN_FLIGHT_MESSAGE}
        ]
        # The four workers were each waiting on a slow call.
        assert len(in_flight) == 4
        for line in in_flight:
            assert line["status"] == "cancelled"
            assert line["started_at"] is not None
        assert finished.summary["counts"]["succeeded"] == FAST_TARGETS
        assert '"event": "run.cancelling"' in finished.stderr
        assert "grace period over" in finished.stderr

    async def test_no_secret_in_outputs(self, start_emulator, tmp_path):
        """An interrupted run writes no credential value or token to stdout, stderr or the report."""
        emulator = await start_emulator(latency_ms=300)
        finished = await interrupted_run(tmp_path, emulator, signal.SIGTERM)
        everything = finished.stdout + finished.stderr + finished.report_path.read_text()

        for secret in (CLIENT_SECRET, CANARY_SECRET, CANARY_CLIENT_ID, *emulator.issued_tokens):
            assert secret not in everything


class TestSecondSignal:
    """A second signal cancels the calls in flight at once, whatever the grace period."""

    @pytest.mark.parametrize(("number", "exit_code"), EXIT_CODES, ids=SIGNAL_IDS)
    async def test_second_signal_ends_run(self, start_emulator, tmp_path, number, exit_code):
        """With calls hanging and a 60 s grace period, the second signal ends the run within seconds."""
        emulator = await start_emulator(faults=[slow_fault()])
        finished = await interrupted_run(
            tmp_path, emulator, number, grace_seconds=60, second_signal_after=0.3
        )

        assert finished.exit_code == exit_code
        assert finished.seconds_to_exit < 4
        assert_one_line_per_target(finished)
        statuses = Counter(line["status"] for line in finished.targets)
        assert statuses == {"succeeded": FAST_TARGETS, "cancelled": TARGETS - FAST_TARGETS}
        summary = finished.summary
        assert summary["interrupted"] is True
        assert summary["exit_code"] == exit_code
        assert "second signal" in finished.stderr


class TestSignalBeforeTargets:
    """A signal that arrives while batchsync signs in still ends with one line per target."""

    async def test_signal_during_sign_in(self, start_emulator, tmp_path):
        """SIGTERM right after the run line cancels every target without a Graph call, exit 143."""
        emulator = await start_emulator(latency_ms=300)
        manifest = tmp_path / "manifest.yaml"
        report = tmp_path / "reports" / "early.jsonl"
        write_manifest(emulator, manifest)
        process = await start_run(tmp_path, manifest, report, "--grace-seconds", "5")
        await wait_for_report(
            process, report, lambda text: '"record":"run"' in text, "the run line"
        )
        process.send_signal(signal.SIGTERM)
        finished = await finish(process, tmp_path, report, time.monotonic())

        assert finished.exit_code == 143
        assert_one_line_per_target(finished)
        assert {line["status"] for line in finished.targets} == {"cancelled"}
        assert finished.summary["interrupted"] is True
        assert graph_object_ids(emulator) == []
