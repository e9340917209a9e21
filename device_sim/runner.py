"""Performs a device machine's effects with Twisted: requests on a transport, timers on a clock, pushes.

One `DeviceRunner` per device; it holds no protocol logic, only the plumbing between machine and world.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.python.failure import Failure

from mdm_protocol.clocks import Clock
from mdm_protocol.errors import SCEP

from . import effects as fx
from .machine import DeviceMachine
from .scep_client import ScepFailed, ScepIssued
from .transport import Reply, Transport, TransportError

# (token, payload[, sent_at]): sent_at is the server's wall-clock time of the push when its link tells it.
OnPush = Callable[..., None]


class PushRegistry(Protocol):
    def register(self, token: bytes, topic: str, on_push: OnPush) -> None: ...
    def unregister(self, token: bytes) -> None: ...


class InProcessPush:
    """Attach devices straight to an in-process APNs simulation (scenarios, single-process runs)."""

    def __init__(self, apns: Any) -> None:
        self.apns = apns

    def register(self, token: bytes, topic: str, on_push: OnPush) -> None:
        self.apns.register(token, topic)
        self.apns.attach(token, on_push)

    def unregister(self, token: bytes) -> None:
        self.apns.unregister(token)


class Observer(Protocol):
    """Receives everything worth counting; the fleet's statistics and reports implement it."""

    def request_done(
        self, runner: DeviceRunner, message: str, sent_at: float, status: int | None
    ) -> None: ...
    def effect(self, runner: DeviceRunner, effect: fx.Effect) -> None: ...


class ScepEnroller(Protocol):
    """Runs a SCEP enrollment for a payload (scep_agent.ScepAgent); fires with ScepIssued or ScepFailed."""

    def enroll(self, spec: Any) -> Any: ...


class DeviceRunner:
    def __init__(self, machine: DeviceMachine, *, clock: Clock, transport: Transport, push: PushRegistry,
                 observer: Observer | None = None, scep: ScepEnroller | None = None) -> None:
        self.machine, self.clock, self.transport, self.push_registry = machine, clock, transport, push
        self.observer = observer
        self.scep = scep
        self.online = True
        # For the end-of-run tally (device_sim.stats.enrollment_tally): the kind of this device's latest failed
        # request (set by a metered transport), and whether its enrollment profile never arrived.
        self.last_error_kind: str | None = None
        self.download_failed = False
        self.last_push_at: float | None = None
        self.last_push_sent_at: float | None = None  # the server's time of that push, when the link tells it
        self.loop_pending = False  # a self-initiated check-in is scheduled (checkin_loop)

    def now(self) -> float:
        return self.clock.seconds()

    # Inputs from the world -----------------------------------------------------------------------------

    def install_enrollment(self, profile: bytes) -> None:
        self.perform(self.machine.install_enrollment(profile, self.now()))

    def resume(self, saved: Any) -> None:
        """Back from a saved state (device_snapshot.SavedDevice): enrolled already, nothing sent to enroll."""
        self.perform(self.machine.resume(saved.profiles, saved.enrollment, saved.push_token, saved.push_magic,
                                         self.now()))

    def check_in(self) -> None:
        """Start a session without a push (a device polling by itself: checkin_loop)."""
        self.loop_pending = False
        self.perform(self.machine.push(self.now()))

    def sign_in_user(self, short_name: str) -> None:
        """A user signs in to this Shared iPad (their channel's TokenUpdate goes out)."""
        self.perform(self.machine.sign_in_user(short_name, self.now()))

    def on_push(self, token: bytes, payload: dict[str, Any], sent_at: float | None = None) -> None:
        self.last_push_at, self.last_push_sent_at = self.now(), sent_at
        if self.online:
            self.perform(self.machine.push(self.now(), token))

    def perform(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.SendRequest):
                self._send(effect)
            elif isinstance(effect, fx.WakeAt):
                self.clock.callLater(max(0.0, effect.at - self.now()), self._timer)
            elif isinstance(effect, fx.RegisterPush):
                self.push_registry.register(effect.token, effect.topic, self.on_push)
            elif isinstance(effect, fx.UnregisterPush):
                self.push_registry.unregister(effect.token)
            elif isinstance(effect, fx.ScepEnroll):
                self._scep_enroll(effect)
            if self.observer is not None:
                self.observer.effect(self, effect)

    # Plumbing ------------------------------------------------------------------------------------------

    def _send(self, request: fx.SendRequest) -> None:
        sent_at = self.now()
        roots = tuple(self.machine.profiles.keychain.trusted_roots())
        # The runner names the session: a transport connecting per session keeps its connection for it.
        deferred = self.transport.send(request, roots, session=self)
        deferred.addCallbacks(self._replied, self._failed, callbackArgs=(request, sent_at),
                              errbackArgs=(request, sent_at))

    def _replied(self, reply: Reply, request: fx.SendRequest, sent_at: float) -> None:
        if self.observer is not None:
            self.observer.request_done(self, request.message, sent_at, reply.status)
        self.perform(self.machine.response(request.request_id, reply.status, reply.body, self.now()))

    def _failed(self, failure: Failure, request: fx.SendRequest, sent_at: float) -> None:
        error = failure.value
        untrusted = isinstance(error, TransportError) and error.untrusted
        reason = error.reason if isinstance(error, TransportError) else failure.getErrorMessage()
        if self.observer is not None:
            self.observer.request_done(self, request.message, sent_at, None)
        effects = self.machine.transport_failed(request.request_id, reason, self.now(), untrusted=untrusted)
        self.perform(effects)

    def _scep_enroll(self, effect: fx.ScepEnroll) -> None:
        if self.scep is None:
            outcome = ScepFailed(effect.spec.payload_uuid, SCEP[22005], "this device has no SCEP client")
            self.perform(self.machine.scep_finished(effect.request_id, outcome, self.now()))
            return
        sent_at = self.now()

        def finished(outcome: Any) -> None:
            if self.observer is not None:
                self.observer.request_done(self, "SCEP", sent_at, 200 if isinstance(outcome, ScepIssued) else None)
            self.perform(self.machine.scep_finished(effect.request_id, outcome, self.now()))

        self.scep.enroll(effect.spec).addCallback(finished)

    def _timer(self) -> None:
        self.perform(self.machine.timer(self.now()))
