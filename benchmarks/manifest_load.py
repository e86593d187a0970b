"""Time `batchsync validate` on a generated manifest, and report its peak memory.

    .venv/bin/python benchmarks/manifest_load.py --targets 100000

The manifest comes from benchmarks/make_manifest.py with a fixed seed; the environment variables it
references are set from the generated env file, so every reference is resolved as in a real run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Generate the manifest, run validate once in a fresh process, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchsync-load-") as folder:
        manifest = Path(folder) / "manifest.yaml"
        env_file = Path(folder) / "manifest.env"
        subprocess.run(
            [sys.executable, str(HERE / "make_manifest.py"), "--targets", str(args.targets), "--seed", "1",
             "--out", str(manifest), "--scenario-out", str(Path(folder) / "scenario.yaml"),
             "--env-out", str(env_file)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        environment = {**os.environ, **_exports(env_file)}
        command = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "batchsync",
            "validate",
            str(manifest),
        ]
        started = time.monotonic()
        result = subprocess.run(
            command, env=environment, capture_output=True, text=True, check=False
        )
        elapsed = time.monotonic() - started
        size_mb = manifest.stat().st_size / 1e6
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    peak_mb = int(peak.group(1)) / 1024 if peak else float("nan")
    print(f"targets={args.targets} size={size_mb:.1f} MB exit={result.returncode} "
          f"seconds={elapsed:.1f} peak_rss={peak_mb:.0f} MiB")  # fmt: skip

    return result.returncode


def _exports(env_file: Path) -> dict[str, str]:
    values = {}
    for line in env_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""

    return values


if __name__ == "__main__":
    sys.exit(main())
