"""Graph and Entra ID emulator for tests and demos of batchsync.

It serves Microsoft Graph's ``synchronization/acquireAccessToken`` action and the Entra ID
endpoints that MSAL calls, over TLS on loopback, with throttling and faults taken from a
scenario file. See ``configs/emulator/`` for commented scenarios.
"""

from batchsync.emulator.records import CallRecord, Stats
from batchsync.emulator.scenario import Scenario, load_scenario
from batchsync.emulator.server import Emulator, build_app, emulator_in_thread, serve_forever

__all__ = [
    "CallRecord",
    "Emulator",
    "Scenario",
    "Stats",
    "build_app",
    "emulator_in_thread",
    "load_scenario",
    "serve_forever",
]
