"""Measure how close batchsync gets to a throttled server's limit, and how often it gets a 429.

The emulator runs as its own process on 127.0.0.1 with one token bucket (``--server-burst``
requests, refilled at ``--server-rate`` per second) for both resource units and writes; batchsync
runs as another process with ``--client-rate`` as its configured ceiling. Figures come from the
run's report. Example (the first BENCHMARKS.md scenario):

    .venv/bin/python benchmarks/throttling.py --targets 2000 --server-rate 100 --server-burst 20 \
        --client-rate 400

Nothing here leaves the machine: both processes listen and connect on loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e"
CLIENT_SECRET = "benchmark-client-secret"  # noqa: S105 - the emulator's own, printed nowhere
URL_PATTERN = re.compile(r"https://127\.0\.0\.1:\d+")


def main() -> int:
    """Run one scenario and print its figures as a Markdown table row and as JSON."""
    args = _parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="batchsync-bench-") as folder:
        workdir = Path(folder)
        emulator, url = _start_emulator(workdir, args)
        try:
            figures = _run_client(workdir, url, args)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    print(json.dumps(figures, indent=2))
    print(_markdown_row(figures))

    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument(
        "--server-rate", type=float, default=100.0, help="bucket refill, requests/s"
    )
    parser.add_argument("--server-burst", type=float, default=20.0, help="bucket capacity")
    parser.add_argument(
        "--client-rate", type=float, default=400.0, help="limits.requests_per_second"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument(
        "--retry-after", default="integer", help="Retry-After shape the emulator sends"
    )
    parser.add_argument(
        "--fixed-rate", action="store_true", help="turn the client's adaptation off"
    )
    parser.add_argument("--keep-log", type=Path, help="copy the client's JSON log here")

    return parser


def _scenario(args: argparse.Namespace) -> dict[str, Any]:
    bucket = {"burst": args.server_burst, "rate": args.server_rate}
    return {
        "seed": 1,
        "latency_ms": args.latency_ms,
        "tenants": [{"id": TENANT_ID, "domains": ["contoso.onmicrosoft.com"]}],
        "apps": [{"client_id": CLIENT_ID, "tenant": TENANT_ID, "secrets": [CLIENT_SECRET],
                  "permissions": ["Synchronization.ReadWrite.All"]}],
        "directory": {"service_principals": "*", "applications": "*"},
        "throttling": {"resource_units": bucket, "writes": bucket, "retry_after": args.retry_after},
    }  # fmt: skip


def _start_emulator(workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps(_scenario(args)), encoding="utf-8")
    command = [sys.executable, "-m", "batchsync", "emulator", "--scenario", str(scenario),
               "--host", "127.0.0.1", "--port", "0", "--state-dir", str(workdir / "emulator")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:
        match = URL_PATTERN.search(line)
        if match:
            return process, match.group(0)
        if time.monotonic() > deadline:
            break
    process.terminate()
    message = "the emulator did not print its URL within 30 s"
    raise RuntimeError(message)


def _manifest(workdir: Path, url: str, args: argparse.Namespace) -> Path:
    lines = [
        "version: 1",
        "tenant: contoso.onmicrosoft.com",
        "cloud: custom",
        f"endpoints: {{graph: '{url}', login: '{url}', ca_bundle: '{workdir / 'emulator' / 'ca.pem'}'}}",
        f"auth: {{client_id: {CLIENT_ID}, client_secret: {{env: BENCH_CLIENT_SECRET}}}}",
        f"limits: {{concurrency: {args.concurrency}, requests_per_second: {args.client_rate}, "
        "max_attempts: 10, backoff_base_seconds: 0.1, backoff_max_seconds: 2}",
        "targets:",
    ]
    for number in range(args.targets):
        lines.append(f"  - name: target-{number:06d}")
        lines.append(f"    service_principal: 00000000-0000-4000-8000-{number:012d}")
        lines.append("    credentials: {SecretToken: {env: BENCH_SECRET_TOKEN}}")
    path = workdir / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    return path


def _run_client(workdir: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    manifest = _manifest(workdir, url, args)
    report = workdir / "reports" / "report.jsonl"
    environment = {
        **os.environ,
        "BENCH_CLIENT_SECRET": CLIENT_SECRET,
        "BENCH_SECRET_TOKEN": "benchmark-token",
    }
    command = [sys.executable, "-m", "batchsync", "run", str(manifest), "--report", str(report),
               "--log-format", "json"]  # fmt: skip
    if args.fixed_rate:
        command.append("--fixed-rate")
    timing = workdir / "time.txt"
    # /usr/bin/time -v reports the client's peak resident memory.
    command = ["/usr/bin/time", "-v", "-o", str(timing), *command]
    started = time.monotonic()
    with (workdir / "client.log").open("w") as log:
        subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, stderr=log, check=False)
    wall = time.monotonic() - started
    if args.keep_log is not None:
        args.keep_log.write_bytes((workdir / "client.log").read_bytes())
    summary = json.loads(report.read_text(encoding="utf-8").splitlines()[-1])
    figures = _figures(summary, wall, args)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read_text())
    figures["client_peak_rss_mib"] = round(int(peak.group(1)) / 1024) if peak else None

    return figures


def _figures(summary: dict[str, Any], wall: float, args: argparse.Namespace) -> dict[str, Any]:
    elapsed = summary["elapsed_seconds"]
    succeeded = summary["counts"]["succeeded"]
    # The bucket lets `burst` requests through at once, then `rate` per second.
    ideal_seconds = max(0.0, (args.targets - args.server_burst) / args.server_rate)
    return {
        "targets": args.targets,
        "server_rate": args.server_rate,
        "server_burst": args.server_burst,
        "client_rate": args.client_rate,
        "adaptive": not args.fixed_rate,
        "retry_after": args.retry_after,
        "succeeded": succeeded,
        "requests": summary["requests"],
        "throttled": summary["throttled"],
        "throttled_share": round(summary["throttled"] / max(1, summary["requests"]), 4),
        "elapsed_seconds": elapsed,
        "paused_seconds": summary["paused_seconds"],
        "ideal_seconds": round(ideal_seconds, 2),
        "success_rate": round(succeeded / elapsed, 2) if elapsed else 0.0,
        "share_of_limit": round(succeeded / elapsed / args.server_rate, 4) if elapsed else 0.0,
        "time_over_ideal": round(elapsed / ideal_seconds - 1, 4) if ideal_seconds else 0.0,
        "wall_seconds": round(wall, 2),
    }


def _markdown_row(figures: dict[str, Any]) -> str:
    return (
        f"| {figures['targets']} | {figures['server_rate']:g}/s, burst {figures['server_burst']:g} "
        f"| {figures['client_rate']:g}/s {'adaptive' if figures['adaptive'] else 'fixed'} "
        f"| {figures['elapsed_seconds']:.1f} s (ideal {figures['ideal_seconds']:.1f} s) "
        f"| {figures['success_rate']:.1f}/s ({figures['share_of_limit']:.1%} of limit) "
        f"| {figures['throttled']} of {figures['requests']} ({figures['throttled_share']:.2%}) "
        f"| {figures['paused_seconds']:.1f} s |"
    )


if __name__ == "__main__":
    sys.exit(main())
