"""The per-target report: a JSON Lines file written and flushed as each target finishes.

The first line describes the run, then one line per target, then a summary line. A line is
flushed as soon as its target finishes, so a crash loses nothing already done, and a report cut
off mid-run is still valid JSON Lines up to its last whole line. The file and any folder created
for it are readable by the owner only: object ids and error messages are not secrets, but they
describe a tenant's applications.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from batchsync.errors import ReportError

__all__ = ["ReportWriter", "TargetResult", "TargetStatus", "default_report_path", "utc_now"]

TargetStatus = Literal["succeeded", "failed", "cancelled", "skipped"]

# Room a report needs per target line, with margin; checked before the first call.
BYTES_PER_TARGET = 1024


def utc_now() -> str:
    """Return the current UTC time in ISO 8601 with milliseconds and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_report_path(directory: Path = Path("reports"), *, shard: object = None) -> Path:
    """Return ``reports/batchsync-<UTC timestamp>.jsonl``, with ``-shard-I-of-N`` for a shard."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    suffix = ""
    if shard is not None:
        index, count = str(shard).split("/")
        suffix = f"-shard-{index}-of-{count}"

    return directory / f"batchsync-{stamp}{suffix}.jsonl"


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What happened to one target; one report line."""

    name: str
    kind: str
    object_id: str
    status: TargetStatus
    http_status: int | None
    error: dict[str, str] | None
    attempts: int
    throttled: int
    request_id: str | None
    client_request_id: str | None
    started_at: str | None
    finished_at: str
    duration_ms: int | None


class ReportWriter:
    """Writes one run's report, a line at a time, flushing after each line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self, *, expected_targets: int) -> None:
        """Create the report file (owner-only) after checking there is room for it.

        Raises:
            ReportError: the file exists, its folder cannot be created or written, or the disk
                has too little free space for ``expected_targets`` lines.
        """
        _make_private_dir(self.path.parent)
        _check_free_space(self.path, expected_targets * BYTES_PER_TARGET)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ReportError(
                self.path, "the file already exists; choose another --report path"
            ) from None
        except OSError as exc:
            raise ReportError(self.path, exc.strerror or str(exc)) from None
        self._file = os.fdopen(fd, "w", encoding="utf-8")

    def write_run(self, fields: dict[str, Any]) -> None:
        """Write the first line, describing the run."""
        self._write({"record": "run", **fields})

    def write_target(self, result: TargetResult) -> None:
        """Write the final line of one target."""
        self._write({"record": "target", **asdict(result)})

    def write_summary(self, fields: dict[str, Any]) -> None:
        """Write the last line and make the file durable."""
        self._write({"record": "summary", **fields})
        if self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; safe to call twice.

        Raises:
            ReportError: the lines still buffered cannot be written, as after a failed write.
        """
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as exc:
            raise ReportError(self.path, exc.strerror or str(exc)) from None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise ReportError(self.path, "the report is not open")
        try:
            self._file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:
            raise ReportError(self.path, exc.strerror or str(exc)) from None


def _make_private_dir(directory: Path) -> None:
    if directory.is_dir():
        if not os.access(directory, os.W_OK):
            raise ReportError(directory, "the folder is not writable")
        return
    if directory.exists():
        raise ReportError(directory, "it is not a folder; choose another --report path")
    # Path.mkdir(parents=True) would create the missing parents with the default mode, so each
    # missing folder is created here, owner-only.
    missing = [directory]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=0o700)
    except OSError as exc:
        raise ReportError(folder, f"cannot create the folder: {exc.strerror}") from None


def _check_free_space(path: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        raise ReportError(path, exc.strerror or str(exc)) from None
    if free < needed:
        raise ReportError(path, f"only {free} bytes free, the report needs about {needed} bytes")
