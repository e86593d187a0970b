"""The terminal progress line and the stream that keeps log lines above it."""

from __future__ import annotations

import asyncio
import io

from batchsync.progress import CLEAR_LINE, ProgressStream, Snapshot, format_line, show_progress


class FakeTerminal(io.StringIO):
    """A text buffer that reports itself as a terminal."""

    def isatty(self) -> bool:
        return True


def snapshot(**changes: object) -> Snapshot:
    """Return a Snapshot of a run half done, with ``changes`` applied."""
    values = {
        "done": 50,
        "total": 100,
        "failed": 2,
        "requests": 60,
        "throttled": 3,
        "paused": False,
    }
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


class TestFormatLine:
    """The text of the progress line."""

    def test_counts_rate_and_throttling(self):
        """The line gives done/total, the share, failures, the request rate and 429s."""
        line = format_line(snapshot(), elapsed=2.0)

        assert line == "batchsync: 50/100 targets (50%), 2 failed, 30.0 requests/s, 3 throttled"

    def test_pause_is_shown(self):
        """A pool paused by Retry-After is shown as paused."""
        assert format_line(snapshot(paused=True), elapsed=1.0).endswith(", paused by Retry-After")

    def test_empty_run(self):
        """A run with no target shows 100% and no division by zero."""
        line = format_line(snapshot(done=0, total=0, requests=0), elapsed=0.0)

        assert "0/0 targets (100%)" in line


class TestProgressStream:
    """Log lines and the progress line share one terminal."""

    def test_log_line_clears_and_redraws(self):
        """A log line first clears the progress line, which is drawn again below it."""
        terminal = FakeTerminal()
        stream = ProgressStream(terminal)
        stream.show("progress")
        stream.write("event one\n")

        assert terminal.getvalue() == f"{CLEAR_LINE}progress{CLEAR_LINE}event one\nprogress"

    def test_clear_removes_the_line(self):
        """After clear(), log lines are written without a progress line."""
        terminal = FakeTerminal()
        stream = ProgressStream(terminal)
        stream.show("progress")
        stream.clear()
        stream.write("last\n")

        assert terminal.getvalue().endswith(f"{CLEAR_LINE}last\n")
        assert stream.isatty()


class TestShowProgress:
    """The refresh task around a run."""

    async def test_draws_then_clears(self):
        """The line is drawn while the block runs and cleared when it ends."""
        terminal = FakeTerminal()
        stream = ProgressStream(terminal)
        async with show_progress(stream, snapshot):
            await asyncio.sleep(0.05)

        assert "50/100 targets" in terminal.getvalue()
        assert terminal.getvalue().endswith(CLEAR_LINE)

    async def test_no_stream_does_nothing(self):
        """Outside a terminal, no task runs and nothing is written."""
        async with show_progress(None, snapshot):
            pass

        assert len(asyncio.all_tasks()) == 1
