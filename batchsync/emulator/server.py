"""The emulator as a running server: the aiohttp application, TLS on loopback, and its lifecycle.

One server plays both Entra's login host and Graph, so ``url``, ``login_url`` and ``graph_url``
are the same. Tests run it inside their own event loop with ``async with Emulator(...)``. The
standalone command runs it with :func:`serve_forever`, and synchronous code such as MSAL-only
tests can use :func:`emulator_in_thread`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from batchsync.emulator.entra import EntraService
from batchsync.emulator.graph import GraphService
from batchsync.emulator.managed_identity import ManagedIdentityService
from batchsync.emulator.records import CallLog, CallRecord, Stats
from batchsync.emulator.scenario import Scenario
from batchsync.emulator.tls import ServerTLS, create_server_tls
from batchsync.emulator.tokens import TokenIssuer, access_token_claims

__all__ = [
    "CALL_LOG_KEY",
    "TOKEN_ISSUER_KEY",
    "Emulator",
    "build_app",
    "emulator_in_thread",
    "is_loopback",
    "serve_forever",
]

logger = structlog.get_logger(__name__)

CALL_LOG_KEY = web.AppKey("batchsync_emulator_call_log", CallLog)
TOKEN_ISSUER_KEY = web.AppKey("batchsync_emulator_token_issuer", TokenIssuer)

_ACQUIRE_ACTION_ROUTE = (
    r"/{version:v1\.0|beta}/{collection:servicePrincipals|applications}/{object_id}"
    "/synchronization/acquireAccessToken"
)
# Published App Service environments show IDENTITY_ENDPOINT as http://127.0.0.1:PORT/MSI/token/,
# so that spelling is served beside the lowercase one.
_MANAGED_IDENTITY_ROUTES = ("/msi/token", "/MSI/token/")
# Pending connections the kernel queues; benchmarks open hundreds of connections at once.
_LISTEN_BACKLOG = 1024
# How long closing waits for requests in progress, such as a `slow` fault still sleeping.
_SHUTDOWN_TIMEOUT_SECONDS = 1.0


def build_app(
    scenario: Scenario, *, url: str | None = None, log: CallLog | None = None
) -> web.Application:
    """Create the emulator's aiohttp application.

    ``url`` is the base URL clients use, which is the audience Graph accepts and the host in
    discovery documents. When it is None, each request's own scheme and Host header are used,
    which suits aiohttp's test client on a port chosen at random. Records go to ``log``,
    which is also available as ``app[CALL_LOG_KEY]``. The managed identity endpoint is served
    only when the scenario has a ``managed_identity`` section.
    """
    log = log if log is not None else CallLog()
    rng = random.Random(scenario.seed)  # noqa: S311 - drives simulated delays, protects nothing
    issuer = TokenIssuer(scenario.tokens, rng, log)
    entra = EntraService(scenario, issuer, log, url)
    graph = GraphService(scenario, issuer, log, rng, url)

    app = web.Application()
    app[CALL_LOG_KEY] = log
    app[TOKEN_ISSUER_KEY] = issuer
    router = app.router
    router.add_get("/common/discovery/instance", entra.instance_discovery)
    router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", entra.openid_configuration)
    router.add_get("/{tenant}/discovery/v2.0/keys", entra.jwks)
    router.add_post("/{tenant}/oauth2/v2.0/token", entra.token)
    if scenario.managed_identity is not None:
        managed_identity = ManagedIdentityService(scenario, issuer, log, url)
        for path in _MANAGED_IDENTITY_ROUTES:
            router.add_get(path, managed_identity.token)
    router.add_route("*", _ACQUIRE_ACTION_ROUTE, graph.acquire_access_token)
    router.add_route("*", "/{tail:.*}", graph.fallback)

    return app


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator:
    """Graph and Entra emulator served over TLS; use as ``async with Emulator(scenario) as e``.

    ``port=0`` picks a free port. Without ``state_dir``, the TLS files go to a temporary
    directory that is deleted on close.

    Raises:
        ValueError: ``host`` is not a loopback address and ``allow_non_loopback`` is false.
    """

    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path | str | None = None,
        *,
        allow_non_loopback: bool = False,
    ) -> None:
        if not allow_non_loopback and not is_loopback(host):
            raise ValueError(
                f"host {host!r} is not a loopback address; use 127.0.0.1, ::1 or localhost, "
                "or pass allow_non_loopback=True to expose the emulator on a network"
            )

        self.scenario = scenario
        self._host = host
        self._port = port
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._owns_state_dir = False
        self._log = CallLog()
        self._tls: ServerTLS | None = None
        self._url: str | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Emulator:
        await self.start()

        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Write the TLS files, bind the port and start serving.

        On failure, whatever was set up is closed again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="batchsync-emulator-"))
            self._owns_state_dir = True
        extra_names = [] if is_loopback(self._host) else [self._host]
        self._tls = create_server_tls(self._state_dir, extra_names)

        listener = _listen(self._host, self._port)
        try:
            await self._serve(listener, self._tls.context)
        except BaseException:
            listener.close()
            raise

        logger.info("emulator.listening", url=self._url, ca_path=str(self._tls.ca_path))

    async def _serve(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        self._url = _format_url(self._host, listener.getsockname()[1])
        app = build_app(self.scenario, url=self._url, log=self._log)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, listener, ssl_context=context, backlog=_LISTEN_BACKLOG)
        await site.start()

    async def close(self) -> None:
        """Stop serving and delete the state directory if the emulator created it."""
        if self._runner is not None:
            server = self._runner.server
            handlers = server.connections if server is not None else []
            transports = [handler.transport for handler in handlers if handler.transport]
            await self._runner.cleanup()
            # A closing TLS connection waits up to 30 s for the client's close_notify, so it can
            # outlive the event loop and leak its socket. Abort whatever is still open.
            for transport in transports:
                transport.abort()
            await asyncio.sleep(0)
            self._runner = None
            logger.info("emulator.stopped", url=self._url, requests=self._log.stats.requests)
        if self._owns_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
            self._owns_state_dir = False

    @property
    def url(self) -> str:
        """Base URL of both Graph and the login host, like ``https://127.0.0.1:PORT``."""
        if self._url is None:
            raise RuntimeError("the emulator is not running; start it with `async with`")

        return self._url

    @property
    def graph_url(self) -> str:
        """Graph base URL, the same as :attr:`url`."""
        return self.url

    @property
    def login_url(self) -> str:
        """Entra login host URL, the same as :attr:`url`."""
        return self.url

    @property
    def ca_path(self) -> Path:
        """Path of the CA certificate PEM that clients must trust."""
        if self._tls is None:
            raise RuntimeError("the emulator is not running; start it with `async with`")

        return self._tls.ca_path

    @property
    def tenant_id(self) -> str:
        """Id of the scenario's first tenant."""
        return self.scenario.tenants[0].id

    @property
    def client_id(self) -> str:
        """Client id of the scenario's first app registration."""
        return self.scenario.apps[0].client_id

    @property
    def client_secret(self) -> str:
        """First secret of the first app registration.

        Raises:
            LookupError: that app has no secret, because it signs in with a certificate or a
                federated credential.
        """
        secrets = self.scenario.apps[0].secrets
        if not secrets:
            raise LookupError(
                "apps[0] has no secrets, so it signs in with a certificate or a federated credential"
            )

        return secrets[0]

    @property
    def calls(self) -> list[CallRecord]:
        """Every request received, in arrival order."""
        return self._log.calls

    @property
    def stats(self) -> Stats:
        """Counters over every request received."""
        return self._log.stats

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token minted, so tests can check that none leaked into output."""
        return self._log.issued_tokens

    def reset_records(self) -> None:
        """Forget the call records and counters; ``issued_tokens`` is kept."""
        self._log.reset()

    def mint_token(self, **overrides: Any) -> str:
        """Mint an access token for the first app without a token request.

        Claims default to what the token endpoint would issue for the emulator's Graph URL.
        Keyword arguments replace claims, and a None value removes one. Tests use this for
        tokens that the endpoint never issues, such as expired ones or ones without roles.
        """
        if self._runner is None:
            raise RuntimeError("the emulator is not running; start it with `async with`")

        issuer = self._runner.app[TOKEN_ISSUER_KEY]
        app = self.scenario.apps[0]
        claims = access_token_claims(
            audience=self.url,
            issuer=f"{self.url}/{app.tenant}/v2.0",
            tenant_id=app.tenant,
            client_id=app.client_id,
            roles=app.permissions,
            lifetime_seconds=issuer.draw_lifetime(),
        )
        claims.update(overrides)

        return issuer.mint({name: value for name, value in claims.items() if value is not None})


def _listen(host: str, port: int) -> socket.socket:
    """Bind before building the app, so that the URL, port included, is known up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return socket.create_server((host, port), family=family, backlog=_LISTEN_BACKLOG)


def _format_url(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host

    return f"https://{name}:{port}"


async def serve_forever(
    scenario: Scenario,
    host: str = "127.0.0.1",
    port: int = 8443,
    state_dir: Path | None = None,
    ready: Callable[[Emulator], None] | None = None,
    *,
    stop: asyncio.Event | None = None,
    allow_non_loopback: bool = False,
) -> None:
    """Serve until ``stop`` is set or the task is cancelled.

    ``ready`` is called with the running emulator once it accepts connections.
    """
    emulator = Emulator(scenario, host, port, state_dir, allow_non_loopback=allow_non_loopback)
    async with emulator:
        if ready is not None:
            ready(emulator)
        if stop is None:
            stop = asyncio.Event()
        await stop.wait()


@contextmanager
def emulator_in_thread(
    scenario: Scenario,
    host: str = "127.0.0.1",
    port: int = 0,
    state_dir: Path | None = None,
) -> Iterator[Emulator]:
    """Run an emulator on its own event loop in a daemon thread, for synchronous callers.

    Raises:
        Exception: whatever stopped the emulator from starting, such as a port in use.
    """
    started = threading.Event()
    outcome: dict[str, Any] = {}
    stop = asyncio.Event()

    def on_ready(emulator: Emulator) -> None:
        outcome["emulator"] = emulator
        outcome["loop"] = asyncio.get_running_loop()
        started.set()

    def run() -> None:
        try:
            # asyncio.run, unlike a bare run_until_complete, keeps the loop turning while it
            # shuts down, so closed connections finish closing before the loop does.
            asyncio.run(serve_forever(scenario, host, port, state_dir, on_ready, stop=stop))
        except Exception as error:  # re-raised in the caller's thread below
            outcome["error"] = error
        finally:
            started.set()

    thread = threading.Thread(target=run, name="batchsync-emulator", daemon=True)
    thread.start()
    started.wait()
    if "error" in outcome:
        raise outcome["error"]

    try:
        yield outcome["emulator"]
    finally:
        outcome["loop"].call_soon_threadsafe(stop.set)
        thread.join()
