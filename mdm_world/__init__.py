"""Worlds that run the MDM server and a simulated fleet together: in memory on virtual time, or on loopback sockets.

The scenario engine, the admin API client and the brief's procedure live here; scenario scripts use these names.
"""

from . import procedure
from .admin_client import AdminAPIError, AdminClient
from .scenario import Context, Outcome, Scenario, ScenarioBroken, ScenarioResult
from .world import World, WorldOptions

__all__ = [
    "AdminAPIError", "AdminClient", "Context", "Outcome", "Scenario", "ScenarioBroken", "ScenarioResult", "World",
    "WorldOptions", "procedure",
]
