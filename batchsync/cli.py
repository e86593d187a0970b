"""The ``batchsync`` command line: ``run``, ``validate``, ``emulator`` and ``--version``.

Exit codes: 0 every target succeeded or was skipped; 1 at least one target failed; 2 invalid
manifest or usage, nothing called; 3 authentication failed, nothing called; 4 the report could not
be written during the run; 130 and 143 the run was stopped by SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from batchsync._version import __version__
from batchsync.errors import ManifestError, ReportError
from batchsync.job import EXIT_USAGE, JobOptions, run_job
from batchsync.log import configure_logging, get_logger
from batchsync.manifest import Manifest, load_manifest
from batchsync.merge import dumps_summary, format_merged, merge_reports
from batchsync.report import default_report_path
from batchsync.shard import parse_shard

__all__ = ["main"]

log = get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["emulator"]:
        # The emulator has its own parser; argparse's REMAINDER would drop leading options.
        from batchsync.emulator.cli import main as emulator_main

        exit_code: int = emulator_main(arguments[1:])
        return exit_code
    parser = _parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "report":
        return _merge(args)
    configure_logging(
        level=logging.DEBUG if args.verbose else logging.INFO, log_format=args.log_format
    )
    if args.command == "validate":
        return _validate(args)

    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchsync",
        description="Hand OAuth credentials to the Microsoft Entra provisioning service for many applications at once.",
    )
    parser.add_argument("--version", action="version", version=f"batchsync {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="call acquireAccessToken for every target of a manifest")
    _add_common(run)
    run.add_argument(
        "--report",
        type=Path,
        help="report file (JSON Lines); default reports/batchsync-<UTC time>.jsonl",
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        help="requests in flight at once; overrides limits.concurrency",
    )
    run.add_argument(
        "--rate",
        type=_positive_float,
        metavar="RPS",
        help="requests per second for the whole run; overrides limits.requests_per_second",
    )
    run.add_argument(
        "--grace-seconds",
        type=_positive_float,
        default=20.0,
        help="on SIGTERM/SIGINT, how long calls in flight may finish (default 20)",
    )
    run.add_argument(
        "--fixed-rate",
        action="store_true",
        help="keep the rate at its configured value instead of adapting to Graph's throttling",
    )
    run.add_argument(
        "--resume",
        type=Path,
        metavar="REPORT",
        help="skip targets that REPORT shows succeeded (or skipped); run the rest",
    )
    run.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="run only this shard of the targets, such as 0/4; auto/4 reads JOB_COMPLETION_INDEX",
    )
    run.add_argument(
        "--emulator",
        action="store_true",
        help="start the bundled Graph emulator on loopback and run against it",
    )
    run.add_argument(
        "--emulator-scenario",
        type=Path,
        metavar="PATH",
        help="emulator scenario file; default MANIFEST-STEM.emulator.yaml beside the manifest, else every object exists",
    )
    validate = commands.add_parser(
        "validate", help="check a manifest and that every reference resolves; calls nothing"
    )
    _add_common(validate)
    report = commands.add_parser("report", help="work with reports")
    report_commands = report.add_subparsers(dest="report_command", metavar="COMMAND", required=True)
    merge = report_commands.add_parser(
        "merge", help="combine the reports of a sharded run into one summary"
    )
    merge.add_argument("reports", type=Path, nargs="+", metavar="REPORT")
    merge.add_argument(
        "--output", type=Path, metavar="PATH", help="also write the merged summary (JSON) to PATH"
    )
    emulator = commands.add_parser(
        "emulator", help="run the Graph emulator standalone on loopback", add_help=False
    )
    emulator.add_argument("emulator_args", nargs=argparse.REMAINDER)

    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="the manifest (YAML)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug events")
    parser.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        default="auto",
        help="log format on stderr; auto is console on a terminal, JSON otherwise",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be at least 1, got {value}"
        raise argparse.ArgumentTypeError(msg)

    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be greater than 0, got {text}"
        raise argparse.ArgumentTypeError(msg)

    return value


def _load(path: Path, *, check_auth: bool = True) -> Manifest | None:
    try:
        manifest = load_manifest(path, check_auth=check_auth)
    except ManifestError as exc:
        print(f"batchsync: {exc}", file=sys.stderr)
        return None
    for warning in manifest.warnings:
        log.warning("manifest.warning", problem=str(warning))

    return manifest


def _validate(args: argparse.Namespace) -> int:
    manifest = _load(args.manifest)
    if manifest is None:
        return EXIT_USAGE
    kinds: Counter[str] = Counter(target.kind for target in manifest.targets)
    counts = ", ".join(
        _plural(kinds[kind], noun) for kind, noun in _KIND_NOUNS.items() if kinds[kind]
    )
    print(
        f"{args.manifest}: valid: {_plural(len(manifest.targets), 'target')} ({counts}), "
        f"cloud {manifest.cloud}, tenant {manifest.tenant}; every reference resolves"
    )

    return 0


_KIND_NOUNS = {"servicePrincipal": "service principal", "application": "application"}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _run(args: argparse.Namespace) -> int:
    # With --emulator the sign-in credentials come from the emulator, not the manifest.
    manifest = _load(args.manifest, check_auth=not args.emulator)
    if manifest is None:
        return EXIT_USAGE
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        print(f"batchsync: --shard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = JobOptions(
        report_path=args.report or default_report_path(shard=shard),
        concurrency=args.concurrency,
        rate=args.rate,
        grace_seconds=args.grace_seconds,
        adaptive_rate=not args.fixed_rate,
        resume_from=args.resume,
        shard=shard,
    )
    try:
        if args.emulator:
            return asyncio.run(_run_emulated(manifest, options, args.emulator_scenario))
        return asyncio.run(run_job(manifest, options))
    except ReportError as exc:
        print(f"batchsync: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _merge(args: argparse.Namespace) -> int:
    try:
        merged = merge_reports(args.reports)
    except ReportError as exc:
        print(f"batchsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_merged(merged))
    if args.output is not None:
        try:
            _write_private(args.output, dumps_summary(merged) + "\n")
        except OSError as exc:
            print(f"batchsync: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE

    return merged.exit_code


def _write_private(path: Path, text: str) -> None:
    # Owner-only like reports, and never over an existing file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


async def _run_emulated(manifest: Manifest, options: JobOptions, scenario: Path | None) -> int:
    from batchsync._emulated import emulated

    with tempfile.TemporaryDirectory(prefix="batchsync-emulator-") as state_dir:
        async with emulated(manifest, scenario, Path(state_dir)) as pointed:
            return await run_job(pointed, options)
