"""Read reports back: for ``run --resume`` and ``report merge``.

A report may have been cut off by a crash or a killed pod, possibly in the middle of a line. It is
read up to its last whole line; a cut-off last line is ignored (and counted), and a report without
a summary line is simply one whose run did not finish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsync.errors import ReportError

__all__ = ["DONE_STATUSES", "ReportContents", "read_report"]

# Outcomes that need no new call: skipped means an earlier run succeeded.
DONE_STATUSES = frozenset({"succeeded", "skipped"})


@dataclass
class ReportContents:
    """The contents of a report file, keeping the last line of each target."""

    path: Path
    run: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    targets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    cut_off_lines: int = 0

    def done(self) -> set[tuple[str, str]]:
        """Return (name, object id) of every target whose last outcome needs no new call."""
        return {key for key, line in self.targets.items() if line.get("status") in DONE_STATUSES}


def read_report(path: Path) -> ReportContents:
    """Read the report at ``path`` up to its last whole line.

    Raises:
        ReportError: the file cannot be read, or a line before the last is not a report line.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReportError(path, str(exc.strerror), action="read") from None
    contents = ReportContents(path)
    lines = raw.split(b"\n")
    # Everything after the last newline is a line the writer never finished.
    complete, tail = lines[:-1], lines[-1]
    if tail.strip():
        contents.cut_off_lines += 1
    for number, line in enumerate(complete, start=1):
        if line.strip():
            _add(contents, _parse(path, number, line))

    return contents


def _parse(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        message = f"line {number} is not JSON; is this a batchsync report?"
        raise ReportError(path, message, action="read") from None
    if not isinstance(record, dict) or "record" not in record:
        message = f'line {number} has no "record" field; is this a batchsync report?'
        raise ReportError(path, message, action="read")

    return record


def _add(contents: ReportContents, record: dict[str, Any]) -> None:
    kind = record["record"]
    if kind == "run":
        contents.run = record
    elif kind == "summary":
        contents.summary = record
    elif kind == "target":
        key = (str(record.get("name")), str(record.get("object_id", "")).lower())
        contents.targets[key] = record
