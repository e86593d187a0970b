"""batchsync: hand OAuth credentials to the Microsoft Entra provisioning service, tenant-wide."""

from batchsync._version import __version__
from batchsync.errors import (
    AuthError,
    BatchsyncError,
    CredentialError,
    GraphError,
    GraphRequestError,
    GraphResponseError,
    GraphTimeoutError,
    ManifestError,
    ManifestProblem,
    ReportError,
    ThrottledError,
)
from batchsync.job import JobOptions, run_job
from batchsync.manifest import Manifest, Target, load_manifest

__all__ = [
    "AuthError",
    "BatchsyncError",
    "CredentialError",
    "GraphError",
    "GraphRequestError",
    "GraphResponseError",
    "GraphTimeoutError",
    "JobOptions",
    "Manifest",
    "ManifestError",
    "ManifestProblem",
    "ReportError",
    "Target",
    "ThrottledError",
    "__version__",
    "load_manifest",
    "run_job",
]
