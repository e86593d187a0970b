"""Tests of the emulator server: TLS files, addresses, lifecycle, threads and the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import msal
import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from batchsync.emulator import Emulator, build_app, emulator_in_thread, serve_forever
from batchsync.emulator.cli import main
from batchsync.emulator.server import CALL_LOG_KEY, is_loopback
from tests import emulator_helpers
from tests.emulator_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    OBJECT_ID,
    TENANT_ID,
    CABundleSession,
    GraphClient,
    StartEmulator,
    client_ssl_context,
    graph_client,
    make_scenario,
    msal_app,
)

# pytest looks for fixtures in the test module's namespace.
fixture_emulator = emulator_helpers.fixture_emulator
fixture_http = emulator_helpers.fixture_http
fixture_new_emulator = emulator_helpers.fixture_new_emulator

REPOSITORY = Path(__file__).resolve().parent.parent
BASIC_SCENARIO_FILE = REPOSITORY / "configs" / "emulator" / "basic.yaml"


class TestEmulatorProperties:
    """Public attributes of a running emulator."""

    async def test_urls(self, emulator: Emulator) -> None:
        """url, graph_url and login_url are one https loopback URL with the bound port."""
        host, _, port = emulator.url.removeprefix("https://").rpartition(":")

        assert host == "127.0.0.1"
        assert int(port) > 0
        assert emulator.graph_url == emulator.url
        assert emulator.login_url == emulator.url

    async def test_identity(self, emulator: Emulator) -> None:
        """tenant_id, client_id and client_secret come from the first tenant and app."""
        assert emulator.tenant_id == TENANT_ID
        assert emulator.client_id == CLIENT_ID
        assert emulator.client_secret == CLIENT_SECRET

    async def test_no_secret(self, new_emulator: StartEmulator, tmp_path: Path) -> None:
        """client_secret raises LookupError for an app without secrets."""
        emulator = await new_emulator(apps=[{"client_id": CLIENT_ID, "tenant": TENANT_ID}])

        with pytest.raises(LookupError, match="no secrets"):
            _ = emulator.client_secret

    def test_not_started(self) -> None:
        """URL and CA path are unavailable before start."""
        emulator = Emulator(make_scenario())

        with pytest.raises(RuntimeError, match="not running"):
            _ = emulator.url
        with pytest.raises(RuntimeError, match="not running"):
            _ = emulator.ca_path

    async def test_mint_token_removes_claims(
        self, emulator: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """mint_token drops claims given as None."""
        client = GraphClient(emulator, http, emulator.mint_token(roles=None))
        response = await client.acquire()

        assert response.status == 401
        assert response.error["code"] == "UnknownError"


class TestTlsFiles:
    """The CA and server certificate files in the state directory."""

    async def test_file_modes(self, emulator: Emulator) -> None:
        """The state directory is 0700 and every file in it is 0600."""
        state_dir = emulator.ca_path.parent

        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        for path in state_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    async def test_ca_key_not_written(self, emulator: Emulator) -> None:
        """Only the CA certificate, server certificate and server key are written."""
        state_dir = emulator.ca_path.parent
        names = sorted(path.name for path in state_dir.iterdir())
        private_keys = [
            path.name for path in state_dir.iterdir() if b"PRIVATE KEY" in path.read_bytes()
        ]

        assert names == ["ca.pem", "server-key.pem", "server.pem"]
        assert private_keys == ["server-key.pem"]

    async def test_server_names(self, emulator: Emulator) -> None:
        """The server certificate covers 127.0.0.1, ::1 and localhost."""
        pem = (emulator.ca_path.parent / "server.pem").read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

        assert {str(address) for address in names.get_values_for_type(x509.IPAddress)} == {
            "127.0.0.1",
            "::1",
        }
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]

    async def test_untrusted_without_ca(
        self, emulator: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A client that does not trust the emulator's CA fails the TLS handshake."""
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"{emulator.url}/{TENANT_ID}/v2.0/.well-known/openid-configuration")

    async def test_open_state_dir_rejected(self, tmp_path: Path) -> None:
        """An existing state directory that others can read is rejected."""
        state_dir = tmp_path / "shared"
        state_dir.mkdir(mode=0o755)
        state_dir.chmod(0o755)

        with pytest.raises(ValueError, match="chmod 700"):
            async with Emulator(make_scenario(), state_dir=state_dir):
                pass

    async def test_temporary_state_dir_removed(self) -> None:
        """Without state_dir, the files go to a temporary directory deleted on close."""
        async with Emulator(make_scenario()) as emulator:
            state_dir = emulator.ca_path.parent
            assert state_dir.is_dir()

        assert not state_dir.exists()

    async def test_failed_start_cleans_up(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A start that fails, here on a port in use, removes the temporary directory."""
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with socket.create_server(("127.0.0.1", 0)) as taken:
            emulator = Emulator(make_scenario(), port=taken.getsockname()[1])
            with pytest.raises(OSError, match="in use"):
                await emulator.start()

        assert os.listdir(tmp_path) == []

    async def test_state_dir_as_text(self, tmp_path: Path) -> None:
        """state_dir may be given as a string."""
        async with Emulator(make_scenario(), state_dir=str(tmp_path / "state")) as emulator:
            assert emulator.ca_path == tmp_path / "state" / "ca.pem"


class TestAddresses:
    """Loopback checks and the addresses the emulator can serve on."""

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"])
    def test_loopback_hosts(self, host: str) -> None:
        """Loopback addresses and localhost count as loopback."""
        assert is_loopback(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com", ""])  # noqa: S104
    def test_other_hosts(self, host: str) -> None:
        """Wildcard, routable and named hosts do not count as loopback."""
        assert not is_loopback(host)

    def test_non_loopback_rejected(self) -> None:
        """The emulator refuses a non-loopback host unless allowed."""
        with pytest.raises(ValueError, match="not a loopback address"):
            Emulator(make_scenario(), host="0.0.0.0")  # noqa: S104

    async def test_ipv6(self, tmp_path: Path, http: aiohttp.ClientSession) -> None:
        """The emulator serves on ::1 with a bracketed URL and a certificate that matches."""
        async with Emulator(make_scenario(), host="::1", state_dir=tmp_path / "v6") as emulator:
            client = await graph_client(emulator, http)
            response = await client.acquire()

        assert emulator.url.startswith("https://[::1]:")
        assert response.status == 204

    async def test_localhost(self, tmp_path: Path, http: aiohttp.ClientSession) -> None:
        """The emulator serves on localhost, and the certificate matches that name."""
        async with Emulator(
            make_scenario(), host="localhost", state_dir=tmp_path / "lh"
        ) as emulator:
            client = await graph_client(emulator, http)
            response = await client.acquire()

        assert emulator.url.startswith("https://localhost:")
        assert response.status == 204


class TestBuildApp:
    """The application factory used without the Emulator wrapper."""

    async def test_plain_http_origin(self) -> None:
        """Without a fixed URL, discovery, audience and records follow the request's origin."""
        app = build_app(make_scenario())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            origin = str(client.make_url("")).rstrip("/")
            document = await client.get(f"/{TENANT_ID}/v2.0/.well-known/openid-configuration")
            token = await client.post(
                f"/{TENANT_ID}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scope": f"{origin}/.default",
                },
            )
            access_token = (await token.json())["access_token"]
            action = await client.post(
                f"/v1.0/servicePrincipals/{OBJECT_ID}/synchronization/acquireAccessToken",
                json={"credentials": [{"key": "BaseAddress", "value": "x"}]},
                headers={"Authorization": f"Bearer {access_token}"},
            )

            assert (await document.json())["issuer"] == f"{origin}/{TENANT_ID}/v2.0"
            assert action.status == 204
            assert [call.status for call in app[CALL_LOG_KEY].calls] == [200, 200, 204]


class TestServeForever:
    """The long-running entry point used by the command line."""

    async def test_ready_and_stop(self, tmp_path: Path, http: aiohttp.ClientSession) -> None:
        """ready receives the running emulator, and setting stop ends the server."""
        stop = asyncio.Event()
        ready = asyncio.Event()
        ready_emulators: list[Emulator] = []

        def on_ready(emulator: Emulator) -> None:
            ready_emulators.append(emulator)
            ready.set()

        task = asyncio.create_task(
            serve_forever(make_scenario(), "127.0.0.1", 0, tmp_path / "s", on_ready, stop=stop)
        )
        await asyncio.wait_for(ready.wait(), timeout=10)
        emulator = ready_emulators[0]
        url = f"{emulator.url}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
        async with http.get(url, ssl=client_ssl_context(emulator)) as response:
            status = response.status
        stop.set()
        await asyncio.wait_for(task, timeout=5)

        assert status == 200
        assert task.done()


class TestEmulatorInThread:
    """The emulator on its own thread, for synchronous callers."""

    def test_sync_msal_and_graph(self, tmp_path: Path) -> None:
        """Synchronous MSAL and requests talk to an emulator running in a thread."""
        with (
            emulator_in_thread(make_scenario(), state_dir=tmp_path / "t") as emulator,
            CABundleSession(emulator.ca_path) as session,
        ):
            app = msal_app(emulator, session)
            token = app.acquire_token_for_client(scopes=[f"{emulator.graph_url}/.default"])
            response = session.post(
                f"{emulator.graph_url}/v1.0/applications/{OBJECT_ID}"
                "/synchronization/acquireAccessToken",
                json={"credentials": [{"key": "SyncAll", "value": "True"}]},
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )

            assert response.status_code == 204
            assert [call.endpoint for call in emulator.calls] == ["openid", "token", "graph"]

    def test_start_error_raised(self, tmp_path: Path) -> None:
        """A port already in use raises in the calling thread."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            with (
                pytest.raises(OSError, match="in use"),
                emulator_in_thread(make_scenario(), port=port, state_dir=tmp_path / "t"),
            ):
                pass

    def test_msal_type(self, tmp_path: Path) -> None:
        """msal_app builds a real ConfidentialClientApplication."""
        with (
            emulator_in_thread(make_scenario(), state_dir=tmp_path / "t") as emulator,
            CABundleSession(emulator.ca_path) as session,
        ):
            assert isinstance(msal_app(emulator, session), msal.ConfidentialClientApplication)


class TestCommandLine:
    """``batchsync emulator`` as a function and as a process."""

    def test_rejects_non_loopback(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A non-loopback --host exits with 2 and names the option that allows it."""
        assert main(["--host", "192.0.2.10"]) == 2
        assert "--allow-non-loopback" in capsys.readouterr().err

    def test_invalid_scenario(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid scenario exits with 2 and names the problem."""
        path = tmp_path / "bad.yaml"
        path.write_text("seed: 1\n", encoding="utf-8")

        assert main(["--scenario", str(path)]) == 2
        assert "invalid scenario" in capsys.readouterr().err

    def test_open_state_dir(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A state directory that others can read exits with 2 before anything is written."""
        state_dir = tmp_path / "shared"
        state_dir.mkdir()
        state_dir.chmod(0o755)

        assert main(["--port", "0", "--state-dir", str(state_dir)]) == 2
        assert "invalid --state-dir" in capsys.readouterr().err
        assert list(state_dir.iterdir()) == []

    def test_port_in_use(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A port in use exits with 1."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            arguments = ["--port", str(port), "--state-dir", str(tmp_path / "s")]

            assert main(arguments) == 1

        assert "cannot start" in capsys.readouterr().err

    @pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
    def test_process_serves_until_signal(self, tmp_path: Path, stop_signal: int) -> None:
        """The process prints how to connect, serves, and exits 0 on a signal."""
        state_dir = tmp_path / "state"
        command = [
            sys.executable, "-m", "batchsync.emulator", "--scenario", str(BASIC_SCENARIO_FILE),
            "--port", "0", "--state-dir", str(state_dir),
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
        process = subprocess.Popen(  # noqa: S603 - fixed arguments, this interpreter
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            cwd=REPOSITORY,
        )
        try:
            banner = read_banner(process)
            url = banner["URL (Graph and login)"]
            discovery = requests.get(
                f"{url}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
                verify=banner["CA certificate"],
                timeout=10,
            )
            process.send_signal(stop_signal)
            remaining, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

        assert discovery.status_code == 200
        assert banner["tenant id"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"
        assert banner["client id"] == "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e"
        assert banner["client secret"] == f"apps[0].secrets[0] in {BASIC_SCENARIO_FILE}"
        assert banner["CA certificate"] == str(state_dir / "ca.pem")
        assert "emulator-client-secret" not in banner["output"] + remaining
        assert process.returncode == 0
        assert "stopped" in remaining


def read_banner(process: subprocess.Popen[str]) -> dict[str, str]:
    """Read the start-up lines up to "Stop with Ctrl+C." and return their labelled values."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Stop with"):
            break
    else:
        raise AssertionError("the emulator exited before it was ready:\n" + "".join(lines))

    banner = {"output": "".join(lines)}
    for line in lines:
        label, separator, value = line.strip().partition(": ")
        if separator:
            banner[label.strip()] = value.strip()

    return banner
