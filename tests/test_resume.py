"""``batchsync run --resume REPORT``: call only the targets an earlier report did not finish."""

from __future__ import annotations

import signal
import time
from collections import Counter

from batchsync.job import EXIT_FAILED, EXIT_OK
from batchsync.report_reader import read_report

from .conftest import manifest_for, object_id, sp_target
from .test_signals import (
    TARGETS,
    finish,
    graph_object_ids,
    interrupted_run,
    start_run,
)


def cut_in_last_target_line(path):
    """Drop the summary of the report at ``path`` and cut its last target line in half.

    This is what a report looks like when the process was killed while writing a line.
    """
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"record":"summary"' in lines[-1]
    last_target = lines[-2]
    path.write_bytes(b"".join(lines[:-2]) + last_target[: len(last_target) // 2])


class TestResumeAfterSignal:
    """A run stopped by SIGTERM is completed by a second run with --resume."""

    async def test_resume_calls_only_unfinished(self, start_emulator, tmp_path):
        """The resumed run calls each unfinished target once, skips the succeeded ones, and exits 0."""
        emulator = await start_emulator(latency_ms=300)
        first = await interrupted_run(tmp_path, emulator, signal.SIGTERM)
        assert first.exit_code == 143
        succeeded = {line["object_id"] for line in first.targets if line["status"] == "succeeded"}
        unfinished = {object_id(n) for n in range(TARGETS)} - succeeded
        assert succeeded
        assert unfinished

        resumed_report = tmp_path / "reports" / "resumed.jsonl"
        resumed_at = time.monotonic()
        process = await start_run(
            tmp_path,
            tmp_path / "manifest.yaml",
            resumed_report,
            "--resume",
            str(first.report_path),
            # Each call takes 0.3 s, so more workers keep the test short.
            "--concurrency",
            "16",
        )
        second = await finish(process, tmp_path, resumed_report, resumed_at)

        assert second.exit_code == EXIT_OK
        called = graph_object_ids(emulator, since=resumed_at)
        assert sorted(called) == sorted(unfinished)
        assert not succeeded & set(called)
        lines = {line["object_id"]: line for line in second.targets}
        assert len(second.targets) == TARGETS
        for identifier in succeeded:
            assert lines[identifier]["status"] == "skipped"
            assert lines[identifier]["attempts"] == 0
        for identifier in unfinished:
            assert lines[identifier]["status"] == "succeeded"
        summary = second.summary
        assert summary["counts"] == {
            "succeeded": len(unfinished),
            "failed": 0,
            "cancelled": 0,
            "skipped": len(succeeded),
        }
        assert summary["interrupted"] is False
        assert second.records[0]["resumed_from"] == str(first.report_path)


class TestResumeInProcess:
    """Resume rules checked with in-process runs against the emulator."""

    async def test_finished_run_calls_nothing(self, start_emulator, run):
        """Resuming a run whose targets all succeeded signs in to nothing, calls nothing and exits 0."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(n) for n in range(5)])
        first = await run(manifest)
        assert first.exit_code == EXIT_OK
        emulator.reset_records()

        second = await run(manifest, resume_from=first.report_path)

        assert second.exit_code == EXIT_OK
        assert emulator.calls == []
        assert {line["status"] for line in second.targets.values()} == {"skipped"}
        assert second.summary["counts"]["skipped"] == 5
        assert second.summary["requests"] == 0

    async def test_failed_targets_run_again(self, start_emulator, run):
        """A target that failed is called again on resume; the succeeded ones are skipped."""
        fault = {"kind": "status", "status": 400, "code": "BadRequest", "message": "Bad.",
                 "objects": [object_id(2)], "calls": [1]}  # fmt: skip
        emulator = await start_emulator(faults=[fault])
        manifest = manifest_for(emulator, [sp_target(n) for n in range(4)])
        first = await run(manifest)
        assert first.exit_code == EXIT_FAILED
        assert first.targets["app-00002"]["status"] == "failed"
        emulator.reset_records()

        second = await run(manifest, resume_from=first.report_path)

        assert second.exit_code == EXIT_OK
        assert graph_object_ids(emulator) == [object_id(2)]
        statuses = {name: line["status"] for name, line in second.targets.items()}
        assert statuses == {"app-00000": "skipped", "app-00001": "skipped",
                            "app-00002": "succeeded", "app-00003": "skipped"}  # fmt: skip

    async def test_skipped_counts_as_done(self, start_emulator, run):
        """A report that is itself a resumed run passes its skipped targets on as done."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(n) for n in range(3)])
        first = await run(manifest)
        second = await run(manifest, resume_from=first.report_path)
        emulator.reset_records()

        third = await run(manifest, resume_from=second.report_path)

        assert emulator.calls == []
        assert Counter(line["status"] for line in third.targets.values()) == {"skipped": 3}

    async def test_new_targets_are_called(self, start_emulator, run):
        """Targets added to the manifest after the first run are called on resume."""
        emulator = await start_emulator()
        first = await run(manifest_for(emulator, [sp_target(n) for n in range(3)]))
        emulator.reset_records()

        second = await run(
            manifest_for(emulator, [sp_target(n) for n in range(5)]),
            resume_from=first.report_path,
        )

        assert sorted(graph_object_ids(emulator)) == [object_id(3), object_id(4)]
        assert second.summary["counts"]["skipped"] == 3
        assert second.summary["counts"]["succeeded"] == 2


class TestCutOffReport:
    """A report cut off in the middle of a line is read up to its last whole line."""

    async def test_reader_stops_at_last_whole_line(self, start_emulator, run):
        """The half-written line is counted as cut off, and the whole lines before it are kept."""
        emulator = await start_emulator()
        first = await run(manifest_for(emulator, [sp_target(n) for n in range(6)]))
        names_in_order = [r["name"] for r in first.records if r["record"] == "target"]
        cut_in_last_target_line(first.report_path)

        contents = read_report(first.report_path)

        assert contents.cut_off_lines == 1
        assert contents.summary is None
        assert contents.run is not None
        assert sorted(name for name, _ in contents.targets) == sorted(names_in_order[:-1])

    async def test_resume_calls_cut_off_target(self, start_emulator, run):
        """Resuming from a cut-off report calls again exactly the target whose line was cut."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(n) for n in range(6)])
        first = await run(manifest)
        last_written = [r for r in first.records if r["record"] == "target"][-1]
        cut_in_last_target_line(first.report_path)
        emulator.reset_records()

        second = await run(manifest, resume_from=first.report_path)

        assert second.exit_code == EXIT_OK
        assert graph_object_ids(emulator) == [last_written["object_id"]]
        assert second.targets[last_written["name"]]["status"] == "succeeded"
        assert second.summary["counts"]["skipped"] == 5

    async def test_cut_in_summary_line(self, start_emulator, run):
        """A report cut in its summary line keeps every target line and has no summary."""
        emulator = await start_emulator()
        first = await run(manifest_for(emulator, [sp_target(n) for n in range(4)]))
        raw = first.report_path.read_bytes()
        first.report_path.write_bytes(raw[: len(raw) - 40])

        contents = read_report(first.report_path)

        assert contents.summary is None
        assert contents.cut_off_lines == 1
        assert len(contents.done()) == 4
