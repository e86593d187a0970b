"""Log output: its format, the fields of each target's event, the run id, retries and tracebacks."""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import structlog
import yaml
from structlog.testing import capture_logs

from batchsync.job import JobOptions, run_job
from batchsync.log import configure_logging, get_logger, shared_processors
from batchsync.manifest import load_manifest

from .conftest import CANARY_SECRET, MISSING_ID, manifest_for, object_id, sp_target

TARGET_FIELDS = {"target", "object_id", "request_id", "attempts", "http_status", "elapsed_ms"}


def json_events(text: str) -> list[dict[str, Any]]:
    """Return every line of ``text`` parsed as JSON; fail on a line that is not JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Return the events called ``name``."""
    return [e for e in events if e["event"] == name]


def log_to(stream: Any, log_format: Any = "auto", level: int = logging.INFO) -> Any:
    """Configure logging to ``stream`` and return a logger."""
    configure_logging(level=level, log_format=log_format, stream=stream)
    return get_logger("tests")


def fail_with_secret_local() -> None:
    """Raise an error from a frame whose local variable contains a canary value."""
    credential = CANARY_SECRET
    message = f"cannot use a credential of {len(credential)} characters"
    raise ValueError(message)


class TestOutputFormat:
    """JSON for pipes and files, readable text on a terminal, and whichever the user asks for."""

    def test_json_when_not_a_tty(self):
        """With the auto format, output to a pipe or file is one JSON object per line."""
        stream = io.StringIO()
        log_to(stream).info("format.checked", answer=42)
        [event] = json_events(stream.getvalue())

        assert event["event"] == "format.checked"
        assert event["answer"] == 42
        assert event["level"] == "info"
        assert event["timestamp"].endswith("Z")

    def test_console_when_asked(self):
        """With the console format, output is readable text even when it is not a terminal."""
        stream = io.StringIO()
        log_to(stream, "console").info("format.checked", answer=42)
        text = stream.getvalue()

        assert not text.startswith("{")
        assert "[info     ] format.checked" in text
        assert "answer=42" in text

    def test_console_on_a_tty(self):
        """With the auto format, output to a terminal is readable text."""
        controller, terminal = os.openpty()
        try:
            with open(terminal, "w", encoding="utf-8") as stream:
                log_to(stream).info("format.checked", answer=42)
                text = os.read(controller, 65536).decode()
        finally:
            os.close(controller)

        assert "[info     ] format.checked" in text
        assert "{" not in text

    def test_json_on_a_tty_when_asked(self):
        """With the JSON format, output to a terminal is JSON."""
        controller, terminal = os.openpty()
        try:
            with open(terminal, "w", encoding="utf-8") as stream:
                log_to(stream, "json").info("format.checked", answer=42)
                text = os.read(controller, 65536).decode()
        finally:
            os.close(controller)

        assert json.loads(text.strip())["event"] == "format.checked"

    def test_debug_only_when_verbose(self):
        """Debug events appear at the DEBUG level and not at INFO."""
        quiet, verbose = io.StringIO(), io.StringIO()
        log_to(quiet).debug("detail.shown")
        log_to(verbose, level=logging.DEBUG).debug("detail.shown")

        assert quiet.getvalue() == ""
        assert json_events(verbose.getvalue())[0]["level"] == "debug"


class TestTargetEvents:
    """Each target ends with one event that carries its ids, attempts and status."""

    async def test_completed_event_fields(self, start_emulator, run):
        """target.completed is INFO and carries the target's name, ids, attempts and status."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1)]))
        [event] = named(json_events(result.logs), "target.completed")
        line = result.targets["app-00001"]

        assert set(event) >= TARGET_FIELDS
        assert event["level"] == "info"
        assert event["target"] == "app-00001"
        assert event["object_id"] == object_id(1)
        assert event["http_status"] == 204
        assert event["attempts"] == 1
        assert event["request_id"] == line["request_id"]
        assert event["request_id"] is not None

    async def test_failed_event_fields(self, start_emulator, run):
        """target.failed is ERROR and adds Graph's error code and message to the same fields."""
        emulator = await start_emulator()
        target = {**sp_target(1), "service_principal": MISSING_ID}
        result = await run(manifest_for(emulator, [target]))
        [event] = named(json_events(result.logs), "target.failed")
        line = result.targets["app-00001"]

        assert set(event) >= TARGET_FIELDS
        assert event["level"] == "error"
        assert event["target"] == "app-00001"
        assert event["object_id"] == MISSING_ID
        assert event["http_status"] == 404
        assert event["attempts"] == 1
        assert event["request_id"] == line["request_id"]
        assert event["graph_error_code"] == "Request_ResourceNotFound"
        assert event["error"] == line["error"]["message"]

    async def test_one_final_event_per_target(self, start_emulator, run):
        """Every target gets exactly one completed or failed event."""
        emulator = await start_emulator()
        targets = [sp_target(n) for n in range(1, 6)]
        targets.append({**sp_target(6), "service_principal": MISSING_ID})
        result = await run(manifest_for(emulator, targets))
        events = json_events(result.logs)
        finals = named(events, "target.completed") + named(events, "target.failed")

        assert sorted(e["target"] for e in finals) == sorted(result.targets)


class TestRunId:
    """Every event of a run carries the run's id, and only that run's events do."""

    async def test_every_event_has_the_run_id(self, start_emulator, run):
        """Each event of a verbose run, sign-in and retries included, has the report's run_id."""
        emulator = await start_emulator(
            faults=[{"kind": "status", "status": 503, "calls": [1], "objects": [object_id(1)]}]
        )
        result = await run(manifest_for(emulator, [sp_target(1), sp_target(2)]), verbose=True)
        events = json_events(result.logs)
        run_id = result.records[0]["run_id"]

        names = {e["event"] for e in events}
        assert {"run.started", "auth.token.acquired", "graph.request.retrying"} <= names
        assert {"target.started", "target.completed", "run.finished"} <= names
        assert {e.get("run_id") for e in events} == {run_id}

    async def test_run_id_bound_in_captured_events(self, start_emulator, tmp_path):
        """Captured event dicts of a run all hold the run's id, and it is unbound afterwards."""
        emulator = await start_emulator()
        manifest_path = tmp_path / "manifest.yaml"
        manifest = manifest_for(emulator, [sp_target(1), sp_target(2)])
        manifest_path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
        report_path = tmp_path / "report.jsonl"
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
            await run_job(load_manifest(manifest_path), JobOptions(report_path), out=io.StringIO())
            get_logger("tests").info("after.run")
        run_id = json.loads(report_path.read_text(encoding="utf-8").splitlines()[0])["run_id"]
        during, after = captured[:-1], captured[-1]

        assert len(during) >= 5
        assert all(e.get("run_id") == run_id for e in during)
        assert "run_id" not in after

    async def test_runs_get_different_ids(self, start_emulator, run):
        """Two runs in one process log different run ids."""
        emulator = await start_emulator()
        first = await run(manifest_for(emulator, [sp_target(1)]))
        second = await run(manifest_for(emulator, [sp_target(1)]))
        first_ids = {e["run_id"] for e in json_events(first.logs)}
        second_ids = {e["run_id"] for e in json_events(second.logs)}

        assert len(first_ids) == 1
        assert len(second_ids) == 1
        assert first_ids != second_ids


class TestRetryEvents:
    """Each retry logs graph.request.retrying with the wait."""

    async def test_retry_after_wait(self, start_emulator, run):
        """A 429 with Retry-After: 0.05 logs one retry at INFO waiting 0.05 s."""
        fault = {"kind": "status", "status": 429, "retry_after": "0.05", "calls": [1]}
        emulator = await start_emulator(faults=[{**fault, "objects": [object_id(1)]}])
        result = await run(manifest_for(emulator, [sp_target(1)]))
        [event] = named(json_events(result.logs), "graph.request.retrying")

        assert event["level"] == "info"
        assert event["target"] == "app-00001"
        assert event["attempt"] == 1
        assert event["http_status"] == 429
        assert event["graph_error_code"] == "TooManyRequests"
        assert event["retry_after_s"] == 0.05
        assert event["wait_s"] == 0.05
        assert event["request_id"] is not None

    async def test_backoff_wait(self, start_emulator, run):
        """Retries without Retry-After log their backoff waits, within the configured ceiling."""
        fault = {"kind": "status", "status": 502, "calls": [1, 2], "objects": [object_id(1)]}
        emulator = await start_emulator(faults=[fault])
        result = await run(manifest_for(emulator, [sp_target(1)]))
        events = named(json_events(result.logs), "graph.request.retrying")

        assert [e["attempt"] for e in events] == [1, 2]
        assert [e["retry_after_s"] for e in events] == [None, None]
        # manifest_for sets backoff_base_seconds 0.05: the ceilings are 0.05 s, then 0.1 s.
        assert 0 <= events[0]["wait_s"] <= 0.05
        assert 0 <= events[1]["wait_s"] <= 0.1


class TestTracebacks:
    """Tracebacks name the error and its frames but never show local variables."""

    def test_json_traceback_has_no_locals(self):
        """A JSON traceback lists frames without locals, so a secret in a local stays hidden."""
        stream = io.StringIO()
        log = log_to(stream, "json")
        try:
            fail_with_secret_local()
        except ValueError:
            log.exception("work.failed")
        [event] = json_events(stream.getvalue())
        [exception] = event["exception"]

        assert exception["exc_type"] == "ValueError"
        assert exception["exc_value"] == "cannot use a credential of 32 characters"
        assert [frame["name"] for frame in exception["frames"]][-1] == "fail_with_secret_local"
        for frame in exception["frames"]:
            assert "locals" not in frame
        assert CANARY_SECRET not in stream.getvalue()

    def test_captured_exception_has_no_locals(self):
        """The processors batchsync renders JSON with turn exc_info into frames without locals."""
        log = get_logger("tests")
        with capture_logs(processors=shared_processors(json=True)) as captured:
            try:
                fail_with_secret_local()
            except ValueError:
                log.exception("work.failed")
        [event] = captured

        assert "exc_info" not in event
        assert all("locals" not in frame for frame in event["exception"][0]["frames"])

    def test_console_traceback_has_no_locals(self):
        """A console traceback shows the code and the error but no variable values."""
        stream = io.StringIO()
        log = log_to(stream, "console")
        try:
            fail_with_secret_local()
        except ValueError:
            log.exception("work.failed")
        text = stream.getvalue()

        assert "Traceback (most recent call last)" in text
        assert "ValueError: cannot use a credential of 32 characters" in text
        assert CANARY_SECRET not in text
