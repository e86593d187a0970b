"""A progress line at the bottom of a terminal: targets done of total, rate, and throttling.

Only on a terminal: in a container, logs are the record and a redrawn line would be noise. Log
events go to the same terminal, so :class:`ProgressStream` wraps stderr: each write first clears
the progress line, and the line is drawn again after it, which keeps log lines and the progress
line from running into each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["ProgressStream", "Snapshot", "show_progress"]

CLEAR_LINE = "\r\x1b[K"
REFRESH_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counts a progress line shows."""

    done: int
    total: int
    failed: int
    requests: int
    throttled: int
    paused: bool


class ProgressStream:
    """A text stream for a terminal that keeps one progress line below everything written."""

    def __init__(self, terminal: TextIO) -> None:
        self._terminal = terminal
        self._line = ""

    def write(self, text: str) -> int:
        """Write ``text`` above the progress line."""
        self._terminal.write(CLEAR_LINE + text)
        if text.endswith("\n") and self._line:
            self._terminal.write(self._line)
        self._terminal.flush()

        return len(text)

    def flush(self) -> None:
        """Flush the terminal."""
        self._terminal.flush()

    def isatty(self) -> bool:
        """Return whether the wrapped stream is a terminal."""
        return self._terminal.isatty()

    def show(self, line: str) -> None:
        """Replace the progress line."""
        self._line = line
        self._terminal.write(CLEAR_LINE + line)
        self._terminal.flush()

    def clear(self) -> None:
        """Remove the progress line for good."""
        self._line = ""
        self._terminal.write(CLEAR_LINE)
        self._terminal.flush()


def format_line(snapshot: Snapshot, elapsed: float) -> str:
    """Return the progress line for ``snapshot`` after ``elapsed`` seconds."""
    share = snapshot.done / snapshot.total if snapshot.total else 1.0
    rate = snapshot.requests / elapsed if elapsed > 0 else 0.0
    line = (
        f"batchsync: {snapshot.done}/{snapshot.total} targets ({share:.0%}), "
        f"{snapshot.failed} failed, {rate:.1f} requests/s, {snapshot.throttled} throttled"
    )
    if snapshot.paused:
        line += ", paused by Retry-After"

    return line


@contextlib.asynccontextmanager
async def show_progress(
    stream: ProgressStream | None, snapshot: Callable[[], Snapshot]
) -> AsyncIterator[None]:
    """Redraw the progress line every half second while the block runs; do nothing without a stream."""
    if stream is None:
        yield
        return
    started = time.monotonic()

    async def refresh() -> None:
        while True:
            stream.show(format_line(snapshot(), time.monotonic() - started))
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stream.clear()
