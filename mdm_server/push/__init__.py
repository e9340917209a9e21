"""Push: the interface the server uses to wake devices, and a faithful APNs simulation behind it.

Real APNs is out of reach here; the simulation keeps its provider-API shape and delivery semantics.
"""

from .apns_sim import APNsSimulation, DeliveryStats
from .interface import ProviderResponse, Pusher, PushRequest

__all__ = ["APNsSimulation", "DeliveryStats", "ProviderResponse", "PushRequest", "Pusher"]
