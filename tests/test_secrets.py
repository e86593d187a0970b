"""No credential value, client secret or access token reaches any output of a run.

Every test runs a whole job against the emulator with the canary values of conftest and then
scans stdout, stderr, the logs, the report and every file in the run's folder for them. Each
situation runs three ways: in-process with debug logging, and as a real ``batchsync run``
subprocess with ``-v --log-format json`` and with ``-v --log-format console``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchsync.job import EXIT_AUTH, EXIT_FAILED, EXIT_OK, EXIT_USAGE, JobOptions, run_job
from batchsync.log import LogFormat, configure_logging
from batchsync.manifest import Manifest, load_manifest

from .conftest import (
    CANARY_CLIENT_ID,
    CANARY_SECRET,
    CLIENT_SECRET,
    MISSING_ID,
    RunResult,
    batchsync_command,
    manifest_for,
    object_id,
    sp_target,
)

WRONG_SECRET = "canary-wrong-client-secret-Jx52pWe"
CANARIES = (CLIENT_SECRET, CANARY_SECRET, CANARY_CLIENT_ID, WRONG_SECRET)
# "Bearer" followed by anything but the redaction mark.
UNREDACTED_BEARER = re.compile(r"(?i)bearer\s+(?!\*\*\*)\S")
CLI_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Situation:
    """One way a run can go: emulator faults, manifest changes and the exit code expected."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=lambda: [sp_target(1), sp_target(2)])
    limits: dict[str, Any] = field(default_factory=dict)
    client_secret: dict[str, str] | None = None
    exit_code: int = EXIT_FAILED
    # Graph requests for the first target: retries and timeouts send more than one.
    first_target_calls: int = 1

    @property
    def calls_graph(self) -> bool:
        """Return whether the canary credentials reach the emulator, proving they were sent."""
        return self.first_target_calls > 0


SITUATIONS = {
    "success": Situation(exit_code=EXIT_OK),
    "not_found": Situation(targets=[{**sp_target(1), "service_principal": MISSING_ID}]),
    "bad_request": Situation(faults=[{"kind": "status", "status": 400, "objects": [object_id(1)]}]),
    "server_error_retried": Situation(
        faults=[{"kind": "status", "status": 503, "objects": [object_id(1)]}],
        first_target_calls=4,
    ),
    "wrong_secret_value": Situation(
        client_secret={"value": WRONG_SECRET}, exit_code=EXIT_AUTH, first_target_calls=0
    ),
    "wrong_secret_env": Situation(
        client_secret={"env": "WRONG_CLIENT_SECRET"}, exit_code=EXIT_AUTH, first_target_calls=0
    ),
    "timeout": Situation(
        faults=[{"kind": "slow", "delay_seconds": 1.0, "objects": [object_id(1)]}],
        limits={"request_timeout_seconds": 0.2, "max_attempts": 2},
        first_target_calls=2,
    ),
}


@pytest.fixture(autouse=True, name="_wrong_secret_variable")
def fixture_wrong_secret_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the wrong client secret in an environment variable for the env situation."""
    monkeypatch.setenv("WRONG_CLIENT_SECRET", WRONG_SECRET)


def manifest_of(emulator: Any, situation: Situation) -> dict[str, Any]:
    """Return the manifest of ``situation``, pointed at ``emulator``."""
    manifest = manifest_for(emulator, situation.targets, limits=situation.limits)
    if situation.client_secret is not None:
        manifest["auth"]["client_secret"] = situation.client_secret
    return manifest


def assert_no_secrets(outputs: dict[str, str], folder: Path, emulator: Any) -> None:
    """Assert that no canary or issued token is in ``outputs`` or any file under ``folder``."""
    files = {str(p): p.read_text("utf-8", "replace") for p in folder.rglob("*") if p.is_file()}
    assert files, f"the run wrote nothing under {folder}"
    secrets = [*CANARIES, *emulator.issued_tokens]
    for where, text in {**outputs, **files}.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"
        assert not UNREDACTED_BEARER.search(text), f"a bearer token appears in {where}"
        assert "authorization" not in text.lower(), f"an Authorization header appears in {where}"


async def assert_sent(emulator: Any, situation: Situation) -> None:
    """Assert that the run really sent the canaries, so the scan had something to find."""
    if not situation.calls_graph:
        assert [c for c in emulator.calls if c.endpoint == "graph"] == []
        return
    first_object = situation.targets[0]["service_principal"]

    def first_calls() -> list[Any]:
        return [c for c in emulator.calls if c.endpoint == "graph" and c.object_id == first_object]

    # The emulator records a slow request when its handler returns, after the client gave up.
    for _ in range(60):
        if len(first_calls()) >= situation.first_target_calls:
            break
        await asyncio.sleep(0.05)
    assert len(first_calls()) == situation.first_target_calls
    assert emulator.issued_tokens
    assert first_calls()[0].credentials["ClientSecret"] == CANARY_SECRET
    assert first_calls()[0].credentials["ClientIdentifier"] == CANARY_CLIENT_ID


def json_events(logs: str) -> list[dict[str, Any]]:
    """Return every JSON log line, parsed; fail on a line that is not JSON."""
    return [json.loads(line) for line in logs.splitlines() if line.strip()]


def assert_no_locals(events: list[dict[str, Any]]) -> None:
    """Assert that no rendered exception in ``events`` carries local variables."""
    for event in events:
        for exception in event.get("exception", []):
            for frame in exception["frames"]:
                assert "locals" not in frame, f"{event['event']} renders locals"


@dataclass
class CliRun:
    """Exit code, output and folder of a ``batchsync run`` subprocess."""

    exit_code: int
    stdout: str
    stderr: str
    folder: Path

    @property
    def reports(self) -> list[Path]:
        """Return the report files under the run's folder."""
        return sorted(self.folder.glob("reports/*.jsonl"))


async def run_cli(tmp_path: Path, manifest: dict[str, Any], *options: str) -> CliRun:
    """Run ``batchsync run MANIFEST`` in a fresh folder with the default report path."""
    manifest_path = tmp_path / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    folder = tmp_path / "run"
    folder.mkdir()
    process = await asyncio.create_subprocess_exec(
        *batchsync_command("run", str(manifest_path), *options),
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return CliRun(process.returncode, stdout.decode(), stderr.decode(), folder)


Prepare = Callable[[Manifest], None]


@pytest.fixture(name="run_prepared")
def fixture_run_prepared(tmp_path: Path) -> Callable[..., Awaitable[RunResult]]:
    """Load a manifest, let the test change the world, then run the job in-process."""

    async def run_prepared(
        manifest: dict[str, Any], prepare: Prepare, *, log_format: LogFormat = "json"
    ) -> RunResult:
        manifest_path = tmp_path / "prepared.yaml"
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        report_path = tmp_path / "reports" / "prepared.jsonl"
        logs, stdout = io.StringIO(), io.StringIO()
        configure_logging(level=10, log_format=log_format, stream=logs)
        loaded = load_manifest(manifest_path)
        prepare(loaded)
        exit_code = await run_job(loaded, JobOptions(report_path=report_path), out=stdout)
        return RunResult(exit_code, stdout.getvalue(), logs.getvalue(), report_path)

    return run_prepared


class TestEverySituation:
    """Success, Graph errors, retries, refused sign-in and timeouts leak nothing."""

    @pytest.mark.parametrize("name", SITUATIONS)
    async def test_in_process_debug_logging(self, start_emulator, run, name):
        """An in-process run with debug logging keeps every secret out of every output."""
        situation = SITUATIONS[name]
        emulator = await start_emulator(faults=situation.faults)
        result = await run(manifest_of(emulator, situation), verbose=True)

        assert result.exit_code == situation.exit_code
        assert '"level": "debug"' in result.logs or not situation.calls_graph
        await assert_sent(emulator, situation)
        outputs = {"stdout": result.stdout, "logs": result.logs}
        assert_no_secrets(outputs, result.report_path.parent, emulator)
        assert_no_locals(json_events(result.logs))

    @pytest.mark.parametrize("name", SITUATIONS)
    async def test_cli_json_debug_logging(self, start_emulator, tmp_path, name):
        """``batchsync run -v --log-format json`` keeps every secret out of every output."""
        situation = SITUATIONS[name]
        emulator = await start_emulator(faults=situation.faults)
        cli = await run_cli(
            tmp_path, manifest_of(emulator, situation), "-v", "--log-format", "json"
        )

        assert cli.exit_code == situation.exit_code, cli.stderr
        assert '"level": "debug"' in cli.stderr or not situation.calls_graph
        assert len(cli.reports) == 1
        await assert_sent(emulator, situation)
        outputs = {"stdout": cli.stdout, "stderr": cli.stderr}
        assert_no_secrets(outputs, cli.folder, emulator)
        assert_no_locals(json_events(cli.stderr))

    @pytest.mark.parametrize("name", SITUATIONS)
    async def test_cli_console_logging(self, start_emulator, tmp_path, name):
        """``batchsync run -v --log-format console`` keeps every secret out of every output."""
        situation = SITUATIONS[name]
        emulator = await start_emulator(faults=situation.faults)
        cli = await run_cli(
            tmp_path, manifest_of(emulator, situation), "-v", "--log-format", "console"
        )

        assert cli.exit_code == situation.exit_code, cli.stderr
        assert "[debug    ] target.started" in cli.stderr or not situation.calls_graph
        assert len(cli.reports) == 1
        await assert_sent(emulator, situation)
        assert_no_secrets({"stdout": cli.stdout, "stderr": cli.stderr}, cli.folder, emulator)


class TestReportPermissions:
    """Reports and the folders created for them are readable by their owner only."""

    async def test_default_report_folder_is_private(self, start_emulator, tmp_path):
        """The default reports/ folder is created 0700 and the report file 0600."""
        emulator = await start_emulator()
        cli = await run_cli(tmp_path, manifest_for(emulator, [sp_target(1)]))

        assert cli.exit_code == EXIT_OK, cli.stderr
        folder_mode = stat.S_IMODE((cli.folder / "reports").stat().st_mode)
        assert folder_mode == 0o700
        [report] = cli.reports
        assert stat.S_IMODE(report.stat().st_mode) == 0o600


class TestCredentialProblemsInWorkers:
    """A credential that breaks between validation and use fails its target, and leaks nothing."""

    async def test_file_replaced_by_directory(self, start_emulator, run_prepared, tmp_path):
        """A credential file that became a directory fails that target with credential_error."""
        secret_file = tmp_path / "secret.txt"
        secret_file.write_text(CANARY_SECRET, encoding="utf-8")
        secret_file.chmod(0o600)

        def replace_with_directory(_manifest: Manifest) -> None:
            secret_file.unlink()
            secret_file.mkdir()

        emulator = await start_emulator()
        broken = sp_target(1, ClientSecret={"file": str(secret_file)})
        manifest = manifest_for(emulator, [broken, sp_target(2)])
        result = await run_prepared(manifest, replace_with_directory)
        failed = result.targets["app-00001"]

        assert result.exit_code == EXIT_FAILED
        assert failed["status"] == "failed"
        assert failed["attempts"] == 0
        assert failed["error"]["code"] == "credential_error"
        assert f"{secret_file} is a directory" in failed["error"]["message"]
        assert result.targets["app-00002"]["status"] == "succeeded"
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )

    @pytest.mark.skipif(
        os.geteuid() == 0, reason="this user reads files whatever their mode (root)"
    )
    async def test_file_made_unreadable(self, start_emulator, run_prepared, tmp_path):
        """A credential file that lost its read permission fails its target: credential_error."""
        secret_file = tmp_path / "secret.txt"
        secret_file.write_text(CANARY_SECRET, encoding="utf-8")
        secret_file.chmod(0o600)

        def make_unreadable(_manifest: Manifest) -> None:
            secret_file.chmod(0o000)

        emulator = await start_emulator()
        broken = sp_target(1, ClientSecret={"file": str(secret_file)})
        result = await run_prepared(manifest_for(emulator, [broken, sp_target(2)]), make_unreadable)
        failed = result.targets["app-00001"]

        assert failed["error"]["code"] == "credential_error"
        assert "is not readable" in failed["error"]["message"]
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )

    async def test_file_replaced_by_fifo(self, start_emulator, run_prepared, tmp_path):
        """A credential file that became a FIFO fails that target instead of blocking the run."""
        secret_file = tmp_path / "secret.txt"
        secret_file.write_text(CANARY_SECRET, encoding="utf-8")
        secret_file.chmod(0o600)

        def replace_with_fifo(_manifest: Manifest) -> None:
            secret_file.unlink()
            os.mkfifo(secret_file, 0o600)

        emulator = await start_emulator()
        broken = sp_target(1, ClientSecret={"file": str(secret_file)})
        result = await run_prepared(
            manifest_for(emulator, [broken, sp_target(2)]), replace_with_fifo
        )
        failed = result.targets["app-00001"]

        assert failed["error"]["code"] == "credential_error"
        assert "is not a regular file" in failed["error"]["message"]
        assert result.targets["app-00002"]["status"] == "succeeded"

    async def test_variable_not_utf8(self, start_emulator, run_prepared, tmp_path, monkeypatch):
        """A variable with bytes that are not UTF-8 fails its target with credential_error."""

        def set_bytes(_manifest: Manifest) -> None:
            # os.environ turns the byte 0xff into the lone surrogate U+DCFF, as it does for a
            # variable inherited with that byte.
            monkeypatch.setenv("TEST_CLIENT_SECRET_VALUE", CANARY_SECRET + "\udcff")

        emulator = await start_emulator()
        result = await run_prepared(manifest_for(emulator, [sp_target(1), sp_target(2)]), set_bytes)

        for target in result.targets.values():
            assert target["status"] == "failed"
            assert target["error"] == {
                "code": "credential_error",
                "message": 'env: TEST_CLIENT_SECRET_VALUE: environment variable "TEST_CLIENT_SECRET_VALUE" is not valid UTF-8; set it to UTF-8 text',
            }
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )

    @pytest.mark.parametrize(
        "reference",
        [{"file": "."}, {"env": "NOT_UTF8"}],
        ids=["directory", "variable-not-utf8"],
    )
    async def test_cli_rejects_before_calling(
        self, start_emulator, tmp_path, monkeypatch, reference
    ):
        """The CLI rejects a broken reference at validation: exit 2, no call, nothing leaked."""
        monkeypatch.setenv("NOT_UTF8", CANARY_SECRET + "\udcff")
        emulator = await start_emulator()
        broken = sp_target(1, ClientSecret=reference)
        cli = await run_cli(tmp_path, manifest_for(emulator, [broken]), "-v")

        assert cli.exit_code == EXIT_USAGE
        assert "targets[0].credentials.ClientSecret" in cli.stderr
        assert emulator.calls == []
        assert cli.reports == []
        for secret in CANARIES:
            assert secret not in cli.stdout + cli.stderr


class TestSignInProblems:
    """A sign-in that cannot start ends the run with exit 3 and leaks nothing."""

    async def test_ca_bundle_removed(self, start_emulator, run_prepared, tmp_path):
        """A CA bundle removed after validation fails sign-in with tls_error, and no call is made."""
        emulator = await start_emulator()
        ca_copy = tmp_path / "ca.pem"
        ca_copy.write_bytes(emulator.ca_path.read_bytes())

        def remove_ca_bundle(_manifest: Manifest) -> None:
            ca_copy.unlink()

        manifest = manifest_for(emulator, [sp_target(1)], endpoints={"ca_bundle": str(ca_copy)})
        result = await run_prepared(manifest, remove_ca_bundle)
        [target] = result.targets.values()

        assert result.exit_code == EXIT_AUTH
        assert target["status"] == "cancelled"
        assert target["error"]["code"] == "tls_error"
        assert "cannot prepare the CA bundle for the login host" in target["error"]["message"]
        assert emulator.calls == []
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )


def exploding_request_body(credentials: list[tuple[str, Any]]) -> bytes:
    """Stand in for request_body and fail with the revealed values in a local and the message."""
    revealed = {key: value.reveal() for key, value in credentials}
    message = f"cannot encode {revealed}"
    raise RuntimeError(message)


class TestUnexpectedErrorInWorker:
    """A bug inside a worker fails its target; its traceback shows no value and no locals."""

    @pytest.fixture(autouse=True, name="_exploding_body")
    def fixture_exploding_body(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make batchsync's own request body builder fail, quoting the credential values."""
        monkeypatch.setattr("batchsync.runner.request_body", exploding_request_body)

    async def test_json_traceback_has_no_values(self, start_emulator, run, tmp_path):
        """The JSON traceback of an internal error has no locals, and its message is redacted."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1), sp_target(2)]), verbose=True)
        events = json_events(result.logs)
        errors = [e for e in events if e["event"] == "target.internal_error"]

        assert result.exit_code == EXIT_FAILED
        assert len(errors) == 2
        [exception] = errors[0]["exception"]
        assert exception["exc_type"] == "RuntimeError"
        assert exception["exc_value"].startswith("cannot encode {")
        assert "***" in exception["exc_value"]
        assert [f["name"] for f in exception["frames"]][-1] == "exploding_request_body"
        assert_no_locals(events)
        for target in result.targets.values():
            assert target["error"] == {
                "code": "internal_error",
                "message": "RuntimeError in batchsync; see the log",
            }
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )

    async def test_console_traceback_has_no_values(self, start_emulator, run_prepared, tmp_path):
        """A console traceback of an internal error names the error, with no value or local."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(1)])
        result = await run_prepared(manifest, lambda _manifest: None, log_format="console")

        assert "Traceback (most recent call last)" in result.logs
        assert "RuntimeError: cannot encode {" in result.logs
        assert "revealed =" not in result.logs
        assert_no_secrets(
            {"stdout": result.stdout, "logs": result.logs}, tmp_path / "reports", emulator
        )
