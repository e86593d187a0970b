"""The JSON Lines report: private files, no overwriting, early checks and flushed lines."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

import batchsync.report
from batchsync.errors import ReportError
from batchsync.job import EXIT_REPORT, EXIT_USAGE
from batchsync.report import BYTES_PER_TARGET, ReportWriter, TargetResult

from .conftest import batchsync_command, manifest_for, sp_target

ROOT = os.geteuid() == 0
ROOT_REASON = "this user writes to any folder whatever its mode (root)"


def mode_of(path: Path) -> int:
    """Return the permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def result_for(name: str) -> TargetResult:
    """Return a succeeded target line named ``name``."""
    return TargetResult(
        name=name, kind="servicePrincipal", object_id="00000000-0000-4000-8000-000000000001",
        status="succeeded", http_status=204, error=None, attempts=1, throttled=0,
        request_id="r", client_request_id="c", started_at="2026-01-01T00:00:00.000Z",
        finished_at="2026-01-01T00:00:00.040Z", duration_ms=40,
    )  # fmt: skip


def open_error(path: Path, targets: int = 1) -> ReportError:
    """Open a writer on ``path``, expect it to fail, and return the error."""
    writer = ReportWriter(path)
    with pytest.raises(ReportError) as caught:
        writer.open(expected_targets=targets)
    return caught.value


@pytest.fixture(name="low_disk")
def fixture_low_disk(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return a setter that makes batchsync.report see a disk with ``free`` bytes left."""

    def set_free(free: int) -> None:
        def disk_usage(_path: object) -> Any:
            return types.SimpleNamespace(total=10**9, used=10**9 - free, free=free)

        fake = types.SimpleNamespace(disk_usage=disk_usage)
        monkeypatch.setattr(batchsync.report, "shutil", fake)

    return set_free


class TestPrivateFiles:
    """The report and the folders created for it are readable by their owner only."""

    def test_file_is_owner_only(self, tmp_path):
        """The report file is created with mode 0600."""
        writer = ReportWriter(tmp_path / "report.jsonl")
        writer.open(expected_targets=1)
        writer.close()

        assert mode_of(tmp_path / "report.jsonl") == 0o600

    def test_file_mode_ignores_permissive_umask(self, tmp_path):
        """The file stays 0600 even when the umask would allow more."""
        old = os.umask(0)
        try:
            writer = ReportWriter(tmp_path / "report.jsonl")
            writer.open(expected_targets=1)
            writer.close()
        finally:
            os.umask(old)

        assert mode_of(tmp_path / "report.jsonl") == 0o600

    def test_every_created_folder_is_owner_only(self, tmp_path):
        """Each missing folder on the way to the report is created 0700, not only the last."""
        path = tmp_path / "reports" / "2026" / "december" / "report.jsonl"
        writer = ReportWriter(path)
        writer.open(expected_targets=1)
        writer.close()

        for folder in (tmp_path / "reports", path.parent.parent, path.parent):
            assert mode_of(folder) == 0o700, folder
        assert mode_of(path) == 0o600

    def test_existing_folder_keeps_its_mode(self, tmp_path):
        """A folder that already exists is used as it is, and its mode is not changed."""
        folder = tmp_path / "shared"
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
        writer = ReportWriter(folder / "report.jsonl")
        writer.open(expected_targets=1)
        writer.close()

        assert mode_of(folder) == 0o755


class TestNoOverwrite:
    """An existing report, or anything else at the path, is never replaced."""

    def test_existing_file_refused(self, tmp_path):
        """An existing file is refused and left exactly as it was."""
        path = tmp_path / "report.jsonl"
        path.write_text("earlier run\n", encoding="utf-8")
        error = open_error(path)

        assert str(error) == (
            f"cannot write report {path}: the file already exists; choose another --report path"
        )
        assert path.read_text(encoding="utf-8") == "earlier run\n"

    def test_symlink_refused(self, tmp_path):
        """A symbolic link at the path is refused, so the report is never written through it."""
        elsewhere = tmp_path / "elsewhere.txt"
        path = tmp_path / "report.jsonl"
        path.symlink_to(elsewhere)
        error = open_error(path)

        assert "already exists" in str(error)
        assert not elsewhere.exists()

    def test_directory_at_path_refused(self, tmp_path):
        """A folder at the report path is refused."""
        path = tmp_path / "report.jsonl"
        path.mkdir()

        assert "already exists" in str(open_error(path))


class TestChecksBeforeFirstCall:
    """Problems with the report's folder or disk are found when the report is opened."""

    @pytest.mark.skipif(ROOT, reason=ROOT_REASON)
    def test_unwritable_folder(self, tmp_path):
        """A folder without write permission is reported by name, and no file is created."""
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            error = open_error(folder / "report.jsonl")
        finally:
            folder.chmod(0o700)

        assert str(error) == f"cannot write report {folder}: the folder is not writable"
        assert list(folder.iterdir()) == []

    def test_folder_path_is_a_file(self, tmp_path):
        """A regular file where the report's folder should be is reported as not a folder."""
        blocker = tmp_path / "reports"
        blocker.write_text("", encoding="utf-8")
        error = open_error(blocker / "report.jsonl")

        assert str(error) == (
            f"cannot write report {blocker}: it is not a folder; choose another --report path"
        )

    def test_file_in_the_way_of_a_parent(self, tmp_path):
        """A regular file in place of a missing folder's parent stops the folder's creation."""
        blocker = tmp_path / "reports"
        blocker.write_text("", encoding="utf-8")
        error = open_error(blocker / "2026" / "report.jsonl")

        assert "cannot create the folder: Not a directory" in str(error)

    def test_too_little_free_space(self, tmp_path, low_disk):
        """A disk with less room than the targets need is reported with both numbers."""
        low_disk(100)
        path = tmp_path / "report.jsonl"
        error = open_error(path, targets=10)

        assert str(error) == (
            f"cannot write report {path}: only 100 bytes free, the report needs about "
            f"{10 * BYTES_PER_TARGET} bytes"
        )
        assert not path.exists()

    def test_enough_free_space(self, tmp_path, low_disk):
        """A disk with exactly the room the targets need is accepted."""
        low_disk(10 * BYTES_PER_TARGET)
        writer = ReportWriter(tmp_path / "report.jsonl")
        writer.open(expected_targets=10)
        writer.close()

        assert (tmp_path / "report.jsonl").exists()


class TestFlushing:
    """Each line is on disk as soon as it is written, so a crash loses nothing already done."""

    def test_each_line_readable_while_open(self, tmp_path):
        """Another reader sees every line while the writer is still open."""
        path = tmp_path / "report.jsonl"
        writer = ReportWriter(path)
        writer.open(expected_targets=2)
        try:
            writer.write_run({"run_id": "r1", "targets": 2})
            first = path.read_text(encoding="utf-8").splitlines()
            writer.write_target(result_for("a"))
            second = path.read_text(encoding="utf-8").splitlines()
            writer.write_target(result_for("b"))
            third = path.read_text(encoding="utf-8").splitlines()
        finally:
            writer.close()

        assert [json.loads(line)["record"] for line in first] == ["run"]
        assert [json.loads(line).get("name") for line in second] == [None, "a"]
        assert [json.loads(line).get("name") for line in third] == [None, "a", "b"]

    def test_write_after_close_fails(self, tmp_path):
        """Writing to a closed report raises ReportError instead of losing the line."""
        path = tmp_path / "report.jsonl"
        writer = ReportWriter(path)
        writer.open(expected_targets=1)
        writer.close()
        writer.close()

        with pytest.raises(ReportError, match="the report is not open"):
            writer.write_target(result_for("a"))


# Writes report lines until the file size limit stops it, then closes the report.
WRITE_UNTIL_FULL = """
import sys
from pathlib import Path
from batchsync.errors import ReportError
from batchsync.report import ReportWriter
writer = ReportWriter(Path(sys.argv[1]))
writer.open(expected_targets=1)
try:
    for number in range(1000):
        writer.write_run({"number": number, "padding": "x" * 200})
except ReportError as exc:
    print("write:", exc)
try:
    writer.close()
except ReportError as exc:
    print("close:", exc)
"""
FILE_SIZE_LIMIT = 4096


def limit_file_size() -> None:
    """Cap the size of files this process writes, so a write fails as on a full disk."""
    # Without this, the kernel stops the process with SIGXFSZ instead of failing the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


class TestWriteFailures:
    """A report that can no longer grow raises ReportError, on write and on close."""

    def test_full_file_raises_report_error(self, tmp_path):
        """Writes past the file size limit, and the close after them, raise ReportError."""
        path = tmp_path / "report.jsonl"
        completed = subprocess.run(  # noqa: S603 - runs this interpreter on a fixed script
            [sys.executable, "-c", WRITE_UNTIL_FULL, str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=limit_file_size,
            check=False,
        )

        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.splitlines() == [
            f"write: cannot write report {path}: File too large",
            f"close: cannot write report {path}: File too large",
        ]
        assert path.stat().st_size == FILE_SIZE_LIMIT


async def run_cli(tmp_path: Path, manifest: dict[str, Any], report: Path) -> tuple[int, str]:
    """Run ``batchsync run MANIFEST --report REPORT``; return the exit code and stderr."""
    manifest_path = tmp_path / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        *batchsync_command("run", str(manifest_path), "--report", str(report)),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


class TestRunWithUnwritableReport:
    """A run whose report cannot be written exits 2 before it signs in or calls Graph."""

    async def test_folder_path_is_a_file(self, start_emulator, tmp_path):
        """A report folder blocked by a file exits 2 with the reason and sends no request."""
        emulator = await start_emulator()
        blocker = tmp_path / "reports"
        blocker.write_text("", encoding="utf-8")
        exit_code, stderr = await run_cli(
            tmp_path, manifest_for(emulator, [sp_target(1)]), blocker / "report.jsonl"
        )

        assert exit_code == EXIT_USAGE
        assert f"batchsync: cannot write report {blocker}: it is not a folder" in stderr
        assert emulator.calls == []

    async def test_existing_report(self, start_emulator, tmp_path):
        """An existing report exits 2, stays as it was, and no request is sent."""
        emulator = await start_emulator()
        report = tmp_path / "report.jsonl"
        report.write_text("earlier run\n", encoding="utf-8")
        exit_code, stderr = await run_cli(tmp_path, manifest_for(emulator, [sp_target(1)]), report)

        assert exit_code == EXIT_USAGE
        assert "the file already exists" in stderr
        assert report.read_text(encoding="utf-8") == "earlier run\n"
        assert emulator.calls == []

    @pytest.mark.skipif(ROOT, reason=ROOT_REASON)
    async def test_unwritable_folder(self, start_emulator, tmp_path):
        """A folder without write permission exits 2 and sends no request."""
        emulator = await start_emulator()
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            exit_code, stderr = await run_cli(
                tmp_path, manifest_for(emulator, [sp_target(1)]), folder / "report.jsonl"
            )
        finally:
            folder.chmod(0o700)

        assert exit_code == EXIT_USAGE
        assert "the folder is not writable" in stderr
        assert emulator.calls == []


class TestFullDiskMidRun:
    """A report that stops growing in the middle of a run."""

    async def test_mid_run_write_failure_exits_4(self, start_emulator, tmp_path):
        """The run stops with exit 4, and every line written before the failure is whole."""
        emulator = await start_emulator()
        manifest_path = tmp_path / "manifest.yaml"
        manifest = manifest_for(emulator, [sp_target(n) for n in range(60)])
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        report = tmp_path / "reports" / "report.jsonl"
        process = await asyncio.create_subprocess_exec(
            *batchsync_command("run", str(manifest_path), "--report", str(report)),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=limit_file_size,
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
        lines = report.read_bytes().split(b"\n")
        whole = [json.loads(line) for line in lines[:-1]]

        assert process.returncode == EXIT_REPORT
        assert "targets may have been called" in stdout.decode()
        assert whole[0]["record"] == "run"
        assert 1 <= sum(1 for line in whole if line["record"] == "target") < 60
