"""``batchsync emulator``: run the Graph and Entra emulator in the foreground.

It prints what a client needs to connect (URL, CA certificate, tenant and client id, and the
managed identity endpoint when the scenario has one) and serves until SIGINT or SIGTERM. It
never prints the client secret or the identity header, only the scenario field that contains
it, because terminal output tends to end up in logs and screenshots.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from batchsync.emulator.scenario import DEFAULT_SCENARIO_PATH, Scenario, load_scenario
from batchsync.emulator.server import Emulator, is_loopback, serve_forever
from batchsync.emulator.tls import prepare_state_dir

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``batchsync emulator``."""
    parser = argparse.ArgumentParser(
        prog="batchsync emulator",
        description="Serve an emulated Microsoft Graph and Entra ID over TLS on loopback.",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO_PATH,
        help="scenario YAML file (default: the built-in demo scenario)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8443,
        help="TCP port to listen on; 0 picks a free one (default: 8443)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory for the CA and server certificate files, created with mode 0700 "
        "(default: a temporary directory deleted on exit)",
    )
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow --host to be an address other networks can reach",
    )

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchsync emulator`` and return the exit status.

    Exit status 0 means a clean stop by signal, 1 a failure to start (such as a port in
    use), and 2 invalid arguments, an invalid scenario or an unusable state directory.
    """
    args = build_parser().parse_args(argv)
    if not args.allow_non_loopback and not is_loopback(args.host):
        print(
            f"batchsync emulator: --host {args.host} is not a loopback address; use 127.0.0.1, "
            "::1 or localhost, or add --allow-non-loopback",
            file=sys.stderr,
        )
        return 2

    try:
        scenario = load_scenario(args.scenario)
    except ValueError as error:
        print(f"batchsync emulator: invalid scenario: {error}", file=sys.stderr)
        return 2

    if args.state_dir is not None:
        try:
            prepare_state_dir(args.state_dir)
        except (ValueError, OSError) as error:
            print(f"batchsync emulator: invalid --state-dir: {error}", file=sys.stderr)
            return 2

    try:
        asyncio.run(_serve_until_signal(scenario, args))
    except OSError as error:
        print(f"batchsync emulator: cannot start: {error}", file=sys.stderr)
        return 1

    return 0


async def _serve_until_signal(scenario: Scenario, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)

    def announce(emulator: Emulator) -> None:
        print(describe(emulator, args.scenario), flush=True)

    await serve_forever(
        scenario,
        args.host,
        args.port,
        args.state_dir,
        announce,
        stop=stop,
        allow_non_loopback=args.allow_non_loopback,
    )
    print("batchsync emulator: stopped", flush=True)


def describe(emulator: Emulator, scenario_path: Path) -> str:
    """Return the connection details printed at start, naming where each secret is set."""
    app = emulator.scenario.apps[0]
    if app.secrets:
        secret_hint = f"apps[0].secrets[0] in {scenario_path}"
    elif app.certificates:
        secret_hint = f"none; apps[0] signs in with apps[0].certificates in {scenario_path}"
    else:
        secret_hint = (
            f"none; apps[0] signs in with apps[0].federated_credentials in {scenario_path}"
        )

    lines = [
        "batchsync emulator: serving Graph and Entra ID",
        f"  URL (Graph and login): {emulator.url}",
        f"  CA certificate:        {emulator.ca_path}",
        f"  tenant id:             {emulator.tenant_id}",
        f"  client id:             {emulator.client_id}",
        f"  client secret:         {secret_hint}",
    ]
    if emulator.scenario.managed_identity is not None:
        lines += [
            f"  IDENTITY_ENDPOINT:     {emulator.url}/msi/token",
            f"  IDENTITY_HEADER:       managed_identity.identity_header in {scenario_path}",
        ]
    lines.append("Stop with Ctrl+C.")

    return "\n".join(lines)
