"""``batchsync report merge``: one account of the reports of a sharded run."""

from __future__ import annotations

import json

from batchsync.cli import main
from batchsync.merge import merge_reports
from batchsync.shard import Shard

from .conftest import MISSING_ID, manifest_for, sp_target


def drop_summary(path):
    """Remove the summary line of the report at ``path``, as if its pod was killed."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert '"record":"summary"' in lines[-1]
    path.write_text("".join(lines[:-1]), encoding="utf-8")


def merge_command(capsys, *arguments):
    """Run ``batchsync report merge ARGUMENTS`` in-process; return exit code, stdout and stderr."""
    capsys.readouterr()
    exit_code = main(["report", "merge", *map(str, arguments)])
    captured = capsys.readouterr()

    return exit_code, captured.out, captured.err


class TestMergeCounts:
    """Counts, requests and failures add up over the reports."""

    async def test_sums_shards(self, start_emulator, run):
        """Two shards with a failure merge into the counts one run would have had."""
        emulator = await start_emulator()
        targets = [sp_target(number) for number in range(10)]
        targets[3] = {**targets[3], "service_principal": MISSING_ID}
        manifest = manifest_for(emulator, targets)
        results = [await run(manifest, shard=Shard(index, 2)) for index in range(2)]

        merged = merge_reports([result.report_path for result in results])

        assert merged.counts == {"succeeded": 9, "failed": 1}
        assert merged.failures == {"Request_ResourceNotFound": 1}
        assert merged.requests == sum(result.summary["requests"] for result in results)
        assert merged.exit_code == 1
        summary = merged.summary()
        assert summary["record"] == "summary"
        assert summary["merged_reports"] == [str(result.report_path) for result in results]

    async def test_cancelled_targets_fail_merge(self, start_emulator, run):
        """A shard whose sign-in failed has cancelled targets, so the merge exits 1."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(number) for number in range(4)])
        good = await run(manifest, shard=Shard(0, 2))
        manifest["auth"]["client_secret"] = {"value": "wrong-secret-value"}
        refused = await run(manifest, shard=Shard(1, 2))
        assert refused.exit_code == 3

        merged = merge_reports([good.report_path, refused.report_path])

        assert merged.counts["cancelled"] == len(refused.targets)
        assert merged.exit_code == 1


class TestMergeCompleteness:
    """A merge notices shards that are absent or given twice."""

    async def test_missing_shard_fails_merge(self, start_emulator, run, capsys):
        """Two reports of a three-shard run name the absent shard and exit 1."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(number) for number in range(12)])
        results = [await run(manifest, shard=Shard(index, 3)) for index in (0, 1)]

        exit_code, out, _ = merge_command(capsys, *(result.report_path for result in results))

        assert exit_code == 1
        assert "missing shard: no report for shard 2/3" in out

    async def test_same_report_twice_is_rejected(self, start_emulator, run, capsys):
        """Naming one report twice exits 2 instead of listing every target as a duplicate."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1)]))

        exit_code, _, error = merge_command(capsys, result.report_path, result.report_path)

        assert exit_code == 2
        assert "more than once" in error

    async def test_output_is_private_and_new(self, start_emulator, run, capsys, tmp_path):
        """--output writes an owner-only file and refuses to overwrite one."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1)]))
        output = tmp_path / "merged.json"

        first, _, _ = merge_command(capsys, result.report_path, "--output", output)
        second, _, error = merge_command(capsys, result.report_path, "--output", output)

        assert first == 0
        assert output.stat().st_mode & 0o777 == 0o600
        assert second == 2
        assert "File exists" in error


class TestMergeProblems:
    """Merge flags reports that overlap, did not finish, or come from another manifest."""

    async def test_flags_duplicates(self, start_emulator, run, capsys):
        """The same shard run twice, as a retried pod would, is reported as duplicates and exits 1."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(number) for number in range(6)])
        first = await run(manifest, shard=Shard(0, 2))
        retried = await run(manifest, shard=Shard(0, 2))
        other = await run(manifest, shard=Shard(1, 2))

        exit_code, printed, _ = merge_command(
            capsys, first.report_path, retried.report_path, other.report_path
        )

        assert exit_code == 1
        merged = merge_reports([first.report_path, retried.report_path, other.report_path])
        assert len(merged.duplicates) == len(first.targets)
        # Each target counts once, from the first report that has it.
        assert sum(merged.counts.values()) == 6
        for name in first.targets:
            assert (
                f"duplicate target: {name} ({first.report_path} and {retried.report_path})"
                in printed
            )

    async def test_flags_unfinished_report(self, start_emulator, run, capsys):
        """A report without a summary line is listed as unfinished, its lines still count, exit 1."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(number) for number in range(6)])
        finished = await run(manifest, shard=Shard(0, 2))
        killed = await run(manifest, shard=Shard(1, 2))
        drop_summary(killed.report_path)

        exit_code, printed, _ = merge_command(capsys, finished.report_path, killed.report_path)

        assert exit_code == 1
        assert f"unfinished (no summary line): {killed.report_path}" in printed
        assert "6 targets: 6 succeeded" in printed

    async def test_warns_about_other_manifest(self, start_emulator, run, capsys):
        """Reports of two different manifests merge with a warning."""
        emulator = await start_emulator()
        one = await run(manifest_for(emulator, [sp_target(1)]))
        two = await run(manifest_for(emulator, [sp_target(2), sp_target(3)]))

        _, printed, _ = merge_command(capsys, one.report_path, two.report_path)

        assert "warning: the reports come from different manifests" in printed

    async def test_output_file(self, start_emulator, run, capsys, tmp_path):
        """--output writes the merged summary as one JSON line with the flags in it."""
        emulator = await start_emulator()
        result = await run(manifest_for(emulator, [sp_target(1), sp_target(2)]))
        drop_summary(result.report_path)
        output = tmp_path / "merged.json"

        merge_command(capsys, result.report_path, "--output", output)

        lines = output.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        merged = json.loads(lines[0])
        assert merged["unfinished"] == [str(result.report_path)]
        assert merged["exit_code"] == 1


class TestMergeErrors:
    """Files that cannot be merged exit 2 with a message naming the file."""

    def test_missing_report(self, tmp_path, capsys):
        """A report that does not exist exits 2."""
        missing = tmp_path / "nope.jsonl"

        exit_code, _, error = merge_command(capsys, missing)

        assert exit_code == 2
        assert str(missing) in error
        assert "cannot read report" in error

    def test_not_a_report(self, tmp_path, capsys):
        """A file that is not JSON Lines exits 2 and names the invalid line."""
        path = tmp_path / "manifest.yaml"
        path.write_text("version: 1\ntargets: []\n", encoding="utf-8")

        exit_code, _, error = merge_command(capsys, path)

        assert exit_code == 2
        assert "line 1 is not JSON; is this a batchsync report?" in error

    def test_json_without_record_field(self, tmp_path, capsys):
        """JSON lines without a record field are not a report."""
        path = tmp_path / "other.jsonl"
        path.write_text('{"name": "x"}\n', encoding="utf-8")

        exit_code, _, error = merge_command(capsys, path)

        assert exit_code == 2
        assert 'line 1 has no "record" field' in error
