"""``run --emulator``: start the bundled Graph emulator and point a manifest at it.

The emulator changes only what a user changes to reach a private or sovereign endpoint: the Graph
and login URLs, an extra CA, and the app credentials. The tenant, targets, limits and references
stay as the manifest has them, so the client path is the one a real run takes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from batchsync.clouds import Endpoints
from batchsync.credentials import Reference
from batchsync.emulator import Emulator, Scenario, load_scenario
from batchsync.log import get_logger
from batchsync.manifest import AuthSettings, Manifest

__all__ = ["emulated", "scenario_for"]

log = get_logger(__name__)

# Fixed namespace so a tenant domain maps to the same emulated tenant id on every run.
_TENANT_NAMESPACE = uuid.UUID("6c3f3f7e-5d1a-4c1b-9a52-3f0d6f1e2b7a")


def scenario_path_for(manifest: Manifest, explicit: Path | None) -> Path | None:
    """Return the scenario to use: ``explicit``, else ``STEM.emulator.yaml`` beside the manifest."""
    if explicit is not None:
        return explicit
    beside = manifest.path.with_name(f"{manifest.path.stem}.emulator.yaml")

    return beside if beside.is_file() else None


def scenario_for(manifest: Manifest) -> Scenario:
    """Build a scenario in which the manifest's tenant exists and every object exists."""
    tenant = manifest.tenant
    is_domain = "." in tenant
    tenant_id = str(uuid.uuid5(_TENANT_NAMESPACE, tenant)) if is_domain else tenant
    return Scenario.model_validate(
        {
            "tenants": [{"id": tenant_id, "domains": [tenant] if is_domain else []}],
            "apps": [
                {
                    "client_id": manifest.auth.client_id,
                    "tenant": tenant_id,
                    "secrets": [f"emulator-{uuid.uuid4()}"],
                    "permissions": ["Synchronization.ReadWrite.All"],
                }
            ],
            "directory": {"service_principals": "*", "applications": "*"},
        }
    )


@asynccontextmanager
async def emulated(
    manifest: Manifest, scenario_path: Path | None, state_dir: Path
) -> AsyncIterator[Manifest]:
    """Start an emulator on loopback and yield ``manifest`` pointed at it.

    Raises:
        ValueError: the scenario file is invalid.
    """
    path = scenario_path_for(manifest, scenario_path)
    scenario = load_scenario(path) if path is not None else scenario_for(manifest)
    async with Emulator(scenario, host="127.0.0.1", port=0, state_dir=state_dir) as emulator:
        log.info(
            "emulator.started",
            url=emulator.url,
            scenario=str(path) if path else "generated: every object exists",
        )
        yield dataclasses.replace(
            manifest,
            cloud="custom",
            endpoints=Endpoints(emulator.graph_url, emulator.login_url, str(emulator.ca_path)),
            auth=AuthSettings(
                client_id=emulator.client_id,
                client_secret=Reference("value", emulator.client_secret),
            ),
        )
