"""National clouds: the Graph and login hosts of each Microsoft Entra deployment.

Tokens are not interchangeable between clouds, and the client-credentials scope must name the
Graph host of the cloud the token is for (``https://graph.microsoft.us/.default`` for GCC High).
Hosts from Microsoft Graph's "National cloud deployments" page.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["CLOUDS", "CloudName", "Endpoints", "is_loopback_url"]

CloudName = Literal["global", "usgov", "usgov-dod", "china", "custom"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a run sends its calls: Graph base URL (no version), login host and extra CA."""

    graph: str
    login: str
    ca_bundle: str | None = None

    @property
    def scope(self) -> str:
        """Return the client-credentials scope for this Graph host."""
        return f"{self.graph.rstrip('/')}/.default"


CLOUDS: dict[str, Endpoints] = {
    "global": Endpoints("https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "usgov": Endpoints("https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "usgov-dod": Endpoints("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": Endpoints("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}


def is_loopback_url(url: str) -> bool:
    """Return whether ``url`` points at a loopback address (127.0.0.0/8, ::1 or localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
