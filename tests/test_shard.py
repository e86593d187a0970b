"""Sharding a manifest across the pods of an Indexed Job, and merging the shards' reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from batchsync.cli import main
from batchsync.manifest import load_manifest
from batchsync.shard import Shard, parse_shard, shard_of

from .conftest import manifest_for, object_id, sp_target

GLOBAL_AUTH = {
    "client_id": "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e",
    "client_secret": {"env": "BATCHSYNC_TEST_CLIENT_SECRET"},
}


@pytest.fixture(name="thousand_targets")
def fixture_thousand_targets(tmp_path):
    """Load a 1,000-target manifest from disk, as batchsync run would."""
    manifest = {
        "version": 1,
        "tenant": "contoso.onmicrosoft.com",
        "cloud": "global",
        "auth": GLOBAL_AUTH,
        "targets": [sp_target(number) for number in range(1000)],
    }
    path = tmp_path / "thousand.yaml"
    # libyaml's dumper, because the pure-Python one took 0.8 s for 1,000 targets on two cores.
    text = yaml.dump(manifest, Dumper=yaml.CSafeDumper, sort_keys=False)
    path.write_text(text, encoding="utf-8")

    return load_manifest(path).targets


class TestParseShard:
    """parse_shard reads INDEX/COUNT, with auto taking the index from JOB_COMPLETION_INDEX."""

    @pytest.mark.parametrize(
        ("text", "environ", "expected"),
        [
            ("0/4", {}, Shard(0, 4)),
            ("3/4", {}, Shard(3, 4)),
            ("0/1", {}, Shard(0, 1)),
            ("auto/4", {"JOB_COMPLETION_INDEX": "2"}, Shard(2, 4)),
            ("/4", {"JOB_COMPLETION_INDEX": "1"}, Shard(1, 4)),
            ("1/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(1, 4)),
        ],
        ids=["first", "last", "single", "auto", "empty-index", "explicit-wins"],
    )
    def test_valid_shards(self, text, environ, expected):
        """Valid texts give the shard, and an explicit index ignores JOB_COMPLETION_INDEX."""
        assert parse_shard(text, environ) == expected

    @pytest.mark.parametrize(
        ("text", "environ", "message"),
        [
            ("4", {}, 'shard "4" must be INDEX/COUNT, such as 0/4, or auto/4'),
            ("", {}, 'shard "" must be INDEX/COUNT'),
            ("a/4", {}, 'shard INDEX "a" is not an integer'),
            ("0/four", {}, 'shard COUNT "four" is not an integer'),
            ("0/4/2", {}, 'shard COUNT "4/2" is not an integer'),
            ("4/4", {}, "shard 4/4 is out of range; INDEX must be 0 to COUNT - 1"),
            ("-1/4", {}, "shard -1/4 is out of range"),
            ("0/0", {}, "shard 0/0 is out of range"),
            ("auto/4", {}, "shard index is auto but JOB_COMPLETION_INDEX is not set"),
            ("auto/4", {"JOB_COMPLETION_INDEX": "7"}, "shard 7/4 is out of range"),
            ("auto/4", {"JOB_COMPLETION_INDEX": "x"}, 'shard INDEX "x" is not an integer'),
        ],
        ids=["no-slash", "empty", "bad-index", "bad-count", "two-slashes", "index-too-big",
             "negative", "zero-count", "auto-unset", "auto-too-big", "auto-not-integer"],
    )  # fmt: skip
    def test_invalid_shards(self, text, environ, message):
        """Invalid texts raise ValueError with a message that names the problem."""
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            parse_shard(text, environ)

    def test_reads_process_environment(self, monkeypatch):
        """Without an explicit mapping, auto reads JOB_COMPLETION_INDEX from os.environ."""
        monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")

        assert parse_shard("auto/4") == Shard(3, 4)

    def test_shard_prints_as_index_slash_count(self):
        """str(Shard) is the INDEX/COUNT text that parse_shard reads."""
        assert str(Shard(2, 4)) == "2/4"
        assert parse_shard(str(Shard(2, 4))) == Shard(2, 4)


class TestShardSelection:
    """Shards split the targets: every target once, the same split every time and everywhere."""

    def test_four_shards_cover_every_target_once(self, thousand_targets):
        """The four shards of 1,000 targets are disjoint and together hold every target."""
        shards = [list(Shard(index, 4).select(thousand_targets)) for index in range(4)]
        names = Counter(target.name for shard in shards for target in shard)

        assert len(names) == 1000
        assert set(names.values()) == {1}
        for shard in shards:
            # These names split 248, 254, 239 and 259, so the bounds catch only a hash that clusters.
            assert 180 < len(shard) < 320

    def test_selection_keeps_manifest_order(self, thousand_targets):
        """Each shard lists its targets in manifest order."""
        for index in range(4):
            positions = [target.index for target in Shard(index, 4).select(thousand_targets)]
            assert positions == sorted(positions)

    def test_selection_is_stable_across_calls(self, thousand_targets):
        """Selecting the same shard twice gives the same targets."""
        first = [target.name for target in Shard(1, 4).select(thousand_targets)]
        second = [target.name for target in Shard(1, 4).select(thousand_targets)]

        assert first == second

    def test_split_is_stable_across_processes(self):
        """Another interpreter with another hash seed puts every name in the same shard."""
        names = [f"app-{number:05d}" for number in range(1000)]
        code = (
            "import json, sys\n"
            "from batchsync.shard import shard_of\n"
            "names = json.load(sys.stdin)\n"
            "print(json.dumps([shard_of(name, 4) for name in names]))\n"
        )
        child = subprocess.run(  # noqa: S603 - this interpreter, with a fixed script
            [sys.executable, "-c", code],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
        )

        assert json.loads(child.stdout) == [shard_of(name, 4) for name in names]

    def test_known_assignments(self):
        """Pinned assignments catch any change of the hash, which would move targets between pods."""
        # Values of the first 8 bytes of SHA-256 of each name, big-endian, modulo the count.
        names = [f"app-{number:05d}" for number in range(8)]

        assert [shard_of(name, 4) for name in names] == [3, 1, 0, 0, 2, 0, 3, 2]
        assert [shard_of(name, 3) for name in names] == [0, 1, 2, 2, 1, 0, 2, 1]


class TestShardedRun:
    """Three shards run against one emulator, then their reports are merged."""

    async def test_three_shards_then_merge(self, start_emulator, run, tmp_path, capsys):
        """The shards call every target exactly once, and report merge sums them as one run."""
        emulator = await start_emulator()
        manifest = manifest_for(emulator, [sp_target(number) for number in range(30)])
        results = [await run(manifest, shard=Shard(index, 3)) for index in range(3)]

        called = Counter(call.object_id for call in emulator.calls if call.endpoint == "graph")
        assert set(called) == {object_id(number) for number in range(30)}
        assert set(called.values()) == {1}
        for index, result in enumerate(results):
            assert result.exit_code == 0
            assert result.records[0]["shard"] == f"{index}/3"
            assert result.records[0]["targets"] == len(result.targets)

        merged_path = tmp_path / "merged.json"
        capsys.readouterr()
        exit_code = main(
            [
                "report",
                "merge",
                *(str(r.report_path) for r in results),
                "--output",
                str(merged_path),
            ]
        )
        printed = capsys.readouterr().out

        assert exit_code == 0
        assert "3 reports, 30 targets: 30 succeeded" in printed
        merged = json.loads(merged_path.read_text(encoding="utf-8"))
        assert merged["counts"] == {"succeeded": 30, "failed": 0, "cancelled": 0, "skipped": 0}
        assert merged["requests"] == 30
        assert merged["duplicates"] == []
        assert merged["unfinished"] == []
        assert merged["exit_code"] == 0
        assert len(merged["manifest_sha256"]) == 1

    async def test_merge_counts_failures(self, start_emulator, run, capsys):
        """A failed target in one shard makes the merged exit code 1 and is counted by code."""
        emulator = await start_emulator()
        targets = [sp_target(number) for number in range(12)]
        targets[5] = {**targets[5], "service_principal": "0badf00d-0000-4000-8000-000000000404"}
        manifest = manifest_for(emulator, targets)
        results = [await run(manifest, shard=Shard(index, 2)) for index in range(2)]
        capsys.readouterr()

        exit_code = main(["report", "merge", *(str(r.report_path) for r in results)])
        printed = capsys.readouterr().out

        assert exit_code == 1
        assert "11 succeeded, 1 failed" in printed
        assert "failures by error code: Request_ResourceNotFound 1" in printed
