"""The ``batchsync`` command line: version, validate, usage errors of run, and the emulator.

Most tests call ``batchsync.cli.main`` in-process from synchronous tests, because ``run`` starts
its own event loop. Where a test must show that nothing was called, an emulator serves on
127.0.0.1 from a thread and the manifest points at it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchsync._version import __version__
from batchsync.cli import main
from batchsync.emulator import Emulator, Scenario, emulator_in_thread

from .conftest import (
    BASE_SCENARIO,
    CANARY_CLIENT_ID,
    CANARY_SECRET,
    CLIENT_SECRET,
    batchsync_command,
    manifest_for,
    object_id,
    sp_target,
)

KUBERNETES = Path(__file__).resolve().parent.parent / "configs" / "kubernetes"

VALID_MANIFEST = """\
version: 1
tenant: contoso.onmicrosoft.com
cloud: global
auth:
  client_id: 5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e
  client_secret: {env: BATCHSYNC_TEST_CLIENT_SECRET}
targets:
  - name: salesforce
    service_principal: 00000000-0000-4000-8000-000000000001
    credentials:
      ClientIdentifier: {env: TEST_CLIENT_IDENTIFIER}
      ClientSecret: {env: TEST_CLIENT_SECRET_VALUE}
  - name: servicenow
    service_principal: 00000000-0000-4000-8000-000000000002
    credentials:
      BaseAddress: {value: https://contoso.service-now.example}
  - name: dropbox
    application: 00000000-0000-4000-8000-000000000003
    credentials:
      SecretToken: {env: TEST_CLIENT_SECRET_VALUE}
"""

# Line 8 has a misspelt limit, line 13 a wrong-case key and line 17 an unset variable.
INVALID_MANIFEST = """\
version: 1
tenant: contoso.onmicrosoft.com
cloud: global
auth:
  client_id: 5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e
  client_secret: {env: BATCHSYNC_TEST_CLIENT_SECRET}
limits:
  concurency: 4
targets:
  - name: salesforce
    service_principal: 00000000-0000-4000-8000-000000000001
    credentials:
      baseAddress: {value: https://contoso.my.salesforce.example}
  - name: servicenow
    service_principal: 00000000-0000-4000-8000-000000000002
    credentials:
      ClientSecret: {env: BATCHSYNC_UNSET_VARIABLE}
"""


@pytest.fixture(name="emulator")
def fixture_emulator(tmp_path) -> Iterator[Emulator]:
    """Serve an emulator on 127.0.0.1 from a thread, for synchronous tests."""
    scenario = Scenario.model_validate(BASE_SCENARIO)
    with emulator_in_thread(scenario, state_dir=tmp_path / "emulator") as emulator:
        yield emulator


@pytest.fixture(name="manifest_path")
def fixture_manifest_path(emulator, tmp_path) -> Path:
    """Write a three-target manifest pointing at the emulator; return its path."""
    path = tmp_path / "manifest.yaml"
    manifest = manifest_for(emulator, [sp_target(number) for number in range(3)])
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")

    return path


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return the path."""
    path.write_text(text, encoding="utf-8")

    return path


def read_summary(report: Path) -> dict[str, Any]:
    """Return the summary line of ``report``, which must be its last line."""
    last = json.loads(report.read_text(encoding="utf-8").splitlines()[-1])
    assert last["record"] == "summary"

    return last


def assert_nothing_called(emulator: Emulator) -> None:
    """Check that the emulator received no request at all: no sign-in, no Graph call."""
    assert emulator.calls == []


class TestVersion:
    """--version prints the version and exits 0."""

    def test_version_in_process(self, capsys):
        """main(["--version"]) prints "batchsync VERSION"."""
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])

        assert exit_info.value.code == 0
        assert capsys.readouterr().out == f"batchsync {__version__}\n"

    def test_version_as_module(self):
        """python -m batchsync --version works from a fresh interpreter."""
        child = subprocess.run(  # noqa: S603 - this interpreter, with fixed arguments
            batchsync_command("--version"), capture_output=True, text=True, check=False
        )

        assert child.returncode == 0
        assert child.stdout.strip() == f"batchsync {__version__}"

    def test_no_command_prints_help(self, capsys):
        """batchsync without a command prints the help on stderr and exits 2."""
        assert main([]) == 2
        assert "usage: batchsync" in capsys.readouterr().err


class TestValidate:
    """validate checks a manifest and its references without calling anything or printing a value."""

    def test_valid_manifest(self, tmp_path, capsys):
        """A valid manifest exits 0 and prints the counts, and no credential value."""
        path = write(tmp_path / "manifest.yaml", VALID_MANIFEST)

        exit_code = main(["validate", str(path)])
        captured = capsys.readouterr()

        assert exit_code == 0
        assert captured.out == (
            f"{path}: valid: 3 targets (2 service principals, 1 application), cloud global, "
            "tenant contoso.onmicrosoft.com; every reference resolves\n"
        )
        for value in (CLIENT_SECRET, CANARY_SECRET, CANARY_CLIENT_ID):
            assert value not in captured.out + captured.err

    def test_invalid_manifest(self, tmp_path, capsys):
        """An invalid manifest exits 2 and lists every problem with file, line and column."""
        path = write(tmp_path / "manifest.yaml", INVALID_MANIFEST)

        exit_code = main(["validate", str(path)])
        captured = capsys.readouterr()

        assert exit_code == 2
        assert captured.out == ""
        errors = captured.err.splitlines()
        assert errors[0] == "batchsync: invalid manifest (3 problems):"
        assert errors[1].startswith(
            f'{path}:8:3: limits.concurency: unknown key "concurency"; did you mean "concurrency"?'
        )
        assert errors[2].startswith(f"{path}:13:7: targets[0].credentials.baseAddress: ")
        assert 'did you mean "BaseAddress"?' in errors[2]
        assert errors[3].startswith(f"{path}:17:")
        assert '"BATCHSYNC_UNSET_VARIABLE" is not set' in errors[3]
        assert CANARY_SECRET not in captured.err

    def test_literal_secret_warning_hides_value(self, tmp_path, capsys):
        """The warning about a literal secret names the key, never the literal."""
        literal = "literal-canary-Wq52"
        text = VALID_MANIFEST.replace(
            "BaseAddress: {value: https://contoso.service-now.example}",
            f"ClientSecret: {{value: {literal}}}",
        )
        path = write(tmp_path / "manifest.yaml", text)

        exit_code = main(["validate", str(path)])
        captured = capsys.readouterr()

        assert exit_code == 0
        assert "ClientSecret is a literal in the manifest" in captured.err
        assert literal not in captured.out + captured.err

    def test_missing_manifest(self, tmp_path, capsys):
        """A manifest path that does not exist exits 2 with a message naming it."""
        missing = tmp_path / "nope.yaml"

        assert main(["validate", str(missing)]) == 2
        assert str(missing) in capsys.readouterr().err


class TestRunUsageErrors:
    """Usage errors of run exit 2 before anything is called."""

    def test_bad_shard(self, emulator, manifest_path, tmp_path, capsys):
        """An out-of-range --shard exits 2, names the option, and creates no report."""
        report = tmp_path / "reports" / "r.jsonl"

        exit_code = main(["run", str(manifest_path), "--report", str(report), "--shard", "4/4"])

        assert exit_code == 2
        assert "batchsync: --shard: shard 4/4 is out of range" in capsys.readouterr().err
        assert not report.exists()
        assert_nothing_called(emulator)

    def test_auto_shard_without_index(self, emulator, manifest_path, tmp_path, capsys, monkeypatch):
        """--shard auto/4 outside an Indexed Job exits 2 and names the missing variable."""
        monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
        report = tmp_path / "r.jsonl"

        exit_code = main(["run", str(manifest_path), "--report", str(report), "--shard", "auto/4"])

        assert exit_code == 2
        assert "JOB_COMPLETION_INDEX is not set" in capsys.readouterr().err
        assert_nothing_called(emulator)

    def test_report_exists(self, emulator, manifest_path, tmp_path, capsys):
        """An existing report is never overwritten: exit 2, file untouched, nothing called."""
        report = write(tmp_path / "old.jsonl", '{"record":"run"}\n')

        exit_code = main(["run", str(manifest_path), "--report", str(report)])

        assert exit_code == 2
        assert "the file already exists; choose another --report path" in capsys.readouterr().err
        assert report.read_text(encoding="utf-8") == '{"record":"run"}\n'
        assert_nothing_called(emulator)

    def test_report_folder_is_a_file(self, emulator, manifest_path, tmp_path, capsys):
        """A report whose folder cannot be created exits 2 and calls nothing."""
        blocker = write(tmp_path / "blocker", "a file, not a folder\n")
        report = blocker / "reports" / "r.jsonl"

        exit_code = main(["run", str(manifest_path), "--report", str(report)])

        assert exit_code == 2
        assert "cannot create the folder" in capsys.readouterr().err
        assert_nothing_called(emulator)

    @pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
    def test_report_on_read_only_file_system(self, emulator, manifest_path, capsys):
        """A report under /proc, where even root cannot create a folder, exits 2 and calls nothing."""
        report = Path("/proc/batchsync-test/reports/r.jsonl")

        exit_code = main(["run", str(manifest_path), "--report", str(report)])

        assert exit_code == 2
        assert "cannot create the folder" in capsys.readouterr().err
        assert_nothing_called(emulator)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes to folders whatever their mode")
    def test_report_folder_not_writable(self, emulator, manifest_path, tmp_path, capsys):
        """A report folder without write permission exits 2 and calls nothing."""
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)

        exit_code = main(["run", str(manifest_path), "--report", str(folder / "r.jsonl")])

        assert exit_code == 2
        assert "the folder is not writable" in capsys.readouterr().err
        assert_nothing_called(emulator)

    def test_resume_from_missing_report(self, emulator, manifest_path, tmp_path, capsys):
        """--resume with a report that does not exist exits 2, creates no report, calls nothing."""
        report = tmp_path / "new.jsonl"
        missing = tmp_path / "missing.jsonl"

        exit_code = main(
            ["run", str(manifest_path), "--report", str(report), "--resume", str(missing)]
        )

        assert exit_code == 2
        assert f"{missing}" in capsys.readouterr().err
        assert not report.exists()
        assert_nothing_called(emulator)

    def test_invalid_manifest(self, emulator, tmp_path, capsys):
        """run with an invalid manifest exits 2 and calls nothing."""
        path = write(tmp_path / "manifest.yaml", INVALID_MANIFEST)

        assert main(["run", str(path), "--report", str(tmp_path / "r.jsonl")]) == 2
        assert "invalid manifest (3 problems)" in capsys.readouterr().err
        assert_nothing_called(emulator)

    @pytest.mark.parametrize("value", ["0", "-1", "soon"])
    def test_bad_grace_seconds(self, manifest_path, capsys, value):
        """--grace-seconds must be a number greater than 0."""
        with pytest.raises(SystemExit) as exit_info:
            main(["run", str(manifest_path), "--grace-seconds", value])

        assert exit_info.value.code == 2
        assert "--grace-seconds" in capsys.readouterr().err


class TestRunAndResume:
    """run and run --resume through the command line, in-process."""

    def test_run_then_resume(self, emulator, manifest_path, tmp_path):
        """A finished run exits 0; resuming from its report calls nothing and exits 0."""
        first = tmp_path / "reports" / "first.jsonl"
        second = tmp_path / "reports" / "second.jsonl"

        assert main(["run", str(manifest_path), "--report", str(first)]) == 0
        graph_calls = [call.object_id for call in emulator.calls if call.endpoint == "graph"]
        assert sorted(graph_calls) == [object_id(number) for number in range(3)]
        assert read_summary(first)["counts"]["succeeded"] == 3
        emulator.reset_records()

        exit_code = main(
            ["run", str(manifest_path), "--report", str(second), "--resume", str(first)]
        )

        assert exit_code == 0
        assert read_summary(second)["counts"]["skipped"] == 3
        assert_nothing_called(emulator)


class TestEmulatorCommand:
    """batchsync emulator has its own options and help."""

    def test_emulator_help(self, capsys):
        """batchsync emulator --help prints the emulator's usage and exits 0."""
        with pytest.raises(SystemExit) as exit_info:
            main(["emulator", "--help"])

        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: batchsync emulator")
        for option in ("--scenario", "--host", "--port", "--state-dir"):
            assert option in out

    def test_emulator_rejects_public_host(self, capsys):
        """batchsync emulator refuses an address other networks can reach."""
        assert main(["emulator", "--host", "192.0.2.10"]) == 2
        assert "is not a loopback address" in capsys.readouterr().err


class TestKubernetesExamples:
    """The Kubernetes examples parse, and the manifest in the ConfigMap is valid."""

    @pytest.mark.parametrize(
        "name", ["cronjob.yaml", "indexed-job.yaml", "configmap-manifest.yaml"]
    )
    def test_files_parse(self, name):
        """Every document of the file is a Kubernetes object with apiVersion, kind and a name."""
        documents = [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]

        assert documents
        for document in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(document)
            assert document["metadata"]["name"]

    def test_configmap_manifest_validates(self, tmp_path, capsys, monkeypatch):
        """The manifest inside configmap-manifest.yaml passes batchsync validate."""
        documents = yaml.safe_load_all((KUBERNETES / "configmap-manifest.yaml").read_text())
        configmap = next(d for d in documents if d and d["kind"] == "ConfigMap")
        path = write(tmp_path / "manifest.yaml", configmap["data"]["manifest.yaml"])
        for name in ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SERVICENOW_PASSWORD"):
            monkeypatch.setenv(name, "placeholder")

        assert main(["validate", str(path)]) == 0
        assert ": valid:" in capsys.readouterr().out
