"""TLS material for the emulator: a throwaway certificate authority and a server certificate.

MSAL refuses authorities that are not https, so the emulator has to serve TLS, and clients
must trust its CA explicitly. The CA's private key stays in memory and is discarded with the
process. Only the CA certificate and the server certificate and key are written, each file
readable by the owner alone, inside a directory only the owner can enter.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["LOOPBACK_NAMES", "ServerTLS", "create_server_tls", "prepare_state_dir"]

# Names the server certificate covers, whatever loopback address the emulator binds.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """Paths of the written PEM files and the server-side SSL context that uses them."""

    ca_path: Path
    cert_path: Path
    key_path: Path
    context: ssl.SSLContext


def prepare_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` with mode 0700, or check that an existing one is private.

    Raises:
        ValueError: the directory exists and other users can read or enter it.
    """
    if not state_dir.exists():
        state_dir.mkdir(mode=0o700, parents=True)
        return

    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"state directory {str(state_dir)!r} has mode {mode:04o}, so other users can read "
            "the server key; run `chmod 700` on it or choose a new directory"
        )


def create_server_tls(state_dir: Path, extra_names: Iterable[str] = ()) -> ServerTLS:
    """Generate a CA and a server certificate, write the PEM files and build the SSL context.

    The certificate covers :data:`LOOPBACK_NAMES` plus ``extra_names``.
    """
    prepare_state_dir(state_dir)
    authority = trustme.CA(organization_name="batchsync Graph emulator")
    names = list(dict.fromkeys([*LOOPBACK_NAMES, *extra_names]))
    server_cert = authority.issue_cert(*names)

    ca_path = state_dir / CA_FILE
    cert_path = state_dir / CERT_FILE
    key_path = state_dir / KEY_FILE
    _write_private(ca_path, authority.cert_pem.bytes())
    _write_private(cert_path, b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    _write_private(key_path, server_cert.private_key_pem.bytes())

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols(["http/1.1"])

    return ServerTLS(ca_path=ca_path, cert_path=cert_path, key_path=key_path, context=context)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that only the owner can read, even if it already existed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)
