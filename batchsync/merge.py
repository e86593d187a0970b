"""``batchsync report merge``: combine the reports of a sharded run into one account.

Each pod of an Indexed Job writes its own report. Merging checks that the shards belong to the
same manifest, that no target appears in two of them, and which shards did not finish, and sums
the counts as one run would have.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsync.errors import ReportError
from batchsync.report_reader import ReportContents, read_report

__all__ = ["MergedReport", "merge_reports"]

_STATUSES = ("succeeded", "failed", "cancelled", "skipped")


@dataclass
class MergedReport:
    """The combined outcome of several reports."""

    reports: list[ReportContents]
    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)
    manifests: set[str] = field(default_factory=set)
    requests: int = 0
    throttled: int = 0

    @property
    def exit_code(self) -> int:
        """Return 0 when every target succeeded or was skipped and every shard finished, else 1."""
        problems = self.unfinished or self.duplicates or self.missing_shards
        if self.counts["failed"] or self.counts["cancelled"] or problems:
            return 1

        return 0

    def summary(self) -> dict[str, Any]:
        """Return the merged summary as a report summary line."""
        return {
            "record": "summary",
            "merged_reports": [str(report.path) for report in self.reports],
            "counts": {status: self.counts.get(status, 0) for status in _STATUSES},
            "requests": self.requests,
            "throttled": self.throttled,
            "failures_by_code": dict(self.failures.most_common()),
            "duplicates": self.duplicates,
            "unfinished": self.unfinished,
            "missing_shards": self.missing_shards,
            "manifest_sha256": sorted(self.manifests),
            "exit_code": self.exit_code,
        }


def merge_reports(paths: list[Path]) -> MergedReport:
    """Read and combine the reports at ``paths``.

    Raises:
        ReportError: a file cannot be read or is not a batchsync report.
    """
    unique = list(dict.fromkeys(path.resolve() for path in paths))
    if len(unique) < len(paths):
        message = "the same report is given more than once; name each shard's report once"
        raise ReportError(paths[0], message, action="read")
    merged = MergedReport([read_report(path) for path in paths])
    owner: dict[tuple[str, str], Path] = {}
    for report in merged.reports:
        _add_report(merged, report, owner)
    merged.missing_shards = _missing_shards(merged.reports)

    return merged


def _missing_shards(reports: list[ReportContents]) -> list[str]:
    """Return the shards ``INDEX/COUNT`` that the run lines name a count for but no report covers."""
    seen: dict[int, set[int]] = {}
    for report in reports:
        shard = str((report.run or {}).get("shard") or "")
        index, _, count = shard.partition("/")
        if index.isdigit() and count.isdigit():
            seen.setdefault(int(count), set()).add(int(index))

    return [
        f"{i}/{count}"
        for count, indexes in sorted(seen.items())
        for i in range(count)
        if i not in indexes
    ]


def _add_report(
    merged: MergedReport, report: ReportContents, owner: dict[tuple[str, str], Path]
) -> None:
    if report.run is not None:
        merged.manifests.add(str(report.run.get("manifest_sha256")))
    if report.summary is None:
        merged.unfinished.append(str(report.path))
    else:
        merged.requests += int(report.summary.get("requests", 0))
        merged.throttled += int(report.summary.get("throttled", 0))
    for key, line in report.targets.items():
        if key in owner:
            merged.duplicates.append(f"{key[0]} ({owner[key]} and {report.path})")
            continue
        owner[key] = report.path
        merged.counts[str(line.get("status"))] += 1
        error = line.get("error")
        if line.get("status") == "failed" and isinstance(error, dict):
            merged.failures[str(error.get("code"))] += 1


def format_merged(merged: MergedReport) -> str:
    """Return a short human summary of ``merged``."""
    total = sum(merged.counts.values())
    parts = ", ".join(f"{merged.counts[s]} {s}" for s in _STATUSES if merged.counts[s])
    noun = "report" if len(merged.reports) == 1 else "reports"
    lines = [f"batchsync: {len(merged.reports)} {noun}, {total} targets: {parts or 'none'}"]
    if merged.failures:
        lines.append(
            "  failures by error code: "
            + ", ".join(f"{c} {n}" for c, n in merged.failures.most_common())
        )
    if len(merged.manifests) > 1:
        lines.append("  warning: the reports come from different manifests")
    lines.extend(f"  unfinished (no summary line): {path}" for path in merged.unfinished)
    lines.extend(f"  missing shard: no report for shard {shard}" for shard in merged.missing_shards)
    lines.extend(f"  duplicate target: {entry}" for entry in merged.duplicates)

    return "\n".join(lines)


def dumps_summary(merged: MergedReport) -> str:
    """Return the merged summary as one JSON line."""
    return json.dumps(merged.summary(), separators=(",", ":"))
