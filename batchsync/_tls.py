"""TLS trust for both HTTP stacks: aiohttp (Graph calls) and requests (MSAL's token calls).

``endpoints.ca_bundle`` adds a CA to the system's trusted ones; it never replaces them, and
verification is never turned off. requests needs care: when ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` is set, ``Session.merge_environment_settings`` replaces ``Session.verify`` with
it, silently dropping the extra CA. :class:`PinnedVerifySession` keeps its own ``verify``.
"""

from __future__ import annotations

import atexit
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import certifi
import requests

__all__ = ["PinnedVerifySession", "combined_ca_file", "ssl_context"]


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Return a verifying client context: the system's CAs plus ``ca_bundle`` when given."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)

    return context


def combined_ca_file(ca_bundle: str | None) -> str | bool:
    """Return what requests' ``verify`` needs: True, or a file with the default CAs plus ``ca_bundle``."""
    if not ca_bundle:
        return True
    default = ssl.get_default_verify_paths().cafile or certifi.where()
    parts = [Path(default).read_text(encoding="utf-8")] if Path(default).is_file() else []
    parts.append(Path(ca_bundle).read_text(encoding="utf-8"))
    fd, name = tempfile.mkstemp(prefix="batchsync-ca-", suffix=".pem")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts))
    atexit.register(_remove, name)

    return name


def _remove(name: str) -> None:
    Path(name).unlink(missing_ok=True)


class PinnedVerifySession(requests.Session):
    """A requests session whose ``verify`` is not overridden by ``REQUESTS_CA_BUNDLE``."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout
        # Never hand an Authorization header or client secret to another host on a redirect.
        self.max_redirects = 0

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings: Any = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None or verify is True:
            settings["verify"] = self.verify

        return settings

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)
