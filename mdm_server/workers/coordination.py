"""Joins one server process to the others on its PostgreSQL database: one leader pushes and wakes, all stay coherent.

The leader holds the schema's advisory lock (notices.py); the others ask again every `poll` seconds, so when it
dies (its connection closes) another takes over within one poll. A new leader pushes every device with a command
waiting: what the old one had yet to push (a push relayed to it, a delayed push) died with it. With `push_grace`
it first holds every push that long: fleets on an in-process APNs simulation must re-attach to its push link, or
their tokens would be refused as unknown (and then never pushed again until their next TokenUpdate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from mdm_protocol.clocks import Clock, DelayedCall

from ..storage.interface import StorageError
from .coherence import AdminCoherence
from .notices import Notice, NoticeLink

log = logging.getLogger(__name__)
LEADER_POLL = 1.0  # seconds between a follower's asks for the leader lock: the longest a dead leader's duties wait


class PushRelay:
    """The `Relay` of wakeups.Waker: a follower's pushes go to the leader as "push <device>..." notices."""

    def __init__(self, coordination: Coordination) -> None:
        self._coordination = coordination

    @property
    def leading(self) -> bool:
        return self._coordination.pushes_here

    def forward(self, device_ids: list[str]) -> None:
        self._coordination.forward(device_ids)


class Coordination(Service):
    """A child service of `MDMServer` (`server`: its admin, waker, service and storage are used)."""

    name: str | None = "coordination"  # type: ignore[assignment]

    def __init__(self, server: Any, dsn: str, *, clock: Clock, reactor: Any = None, schema: str | None = None,
                 poll: float = LEADER_POLL, push_grace: float = 0.0) -> None:
        self.server, self.clock, self.poll, self.push_grace = server, clock, poll, push_grace
        self.link = NoticeLink(dsn, schema=schema, reactor=reactor, on_lost=self._lost)
        self.coherence = AdminCoherence(server.admin)
        self.on_elected: list[Callable[[], Any]] = []  # e.g. a worker adopting the push-link socket
        self.on_lost: Callable[[str], Any] = lambda why: None  # the CLI ends the process: a restart rejoins
        self.elected_at: float | None = None
        self.catch_up_pushes = 0
        self._call: DelayedCall | None = None
        self._held: set[str] | None = None  # pushes a new leader holds during its push_grace
        server.admin.sync_wakeups = False  # until elected
        changed = server.service.on_device_changed

        def device_changed(device_id: str) -> Any:
            report = changed(device_id)
            self._publish("device", [device_id])  # the others re-file its labels and sync slot
            return report

        server.service.on_device_changed = device_changed

    @property
    def leading(self) -> bool:
        return self.link.leading

    @property
    def pushes_here(self) -> bool:
        """This process pushes now: it leads, past its push_grace."""
        return self.link.leading and self._held is None

    def forward(self, device_ids: list[str]) -> None:
        if self._held is not None:
            self._held.update(device_ids)
        else:
            self._publish("push", device_ids)

    def startService(self) -> None:
        super().startService()
        self.server.waker.relay = PushRelay(self)  # a server never started pushes itself, as alone
        self.link.listen(self._notice)
        self._ask()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.link.close()  # leadership ends with the connection
        return defer.succeed(None)

    def _notice(self, notice: Notice) -> None:
        if notice.topic == "push":
            if self._held is not None:
                self._held.update(notice.words)
            elif self.link.leading:
                self.server.waker.push_now(list(notice.words))
        else:
            self.coherence.apply(notice)

    def _ask(self) -> None:
        self._call = None
        if not self.running:
            return
        try:
            leading = self.link.try_lead()
        except StorageError:
            return  # the link is lost: _lost has been told
        if leading:
            self._elected()
        else:
            self._call = self.clock.callLater(self.poll, self._ask)

    def _elected(self) -> None:
        self.elected_at = self.clock.seconds()
        self._learn_tokens()
        self.server.admin.labels.schedule.start()
        log.info("this server process leads: pushes and sync wake-ups")
        for callback in self.on_elected:
            callback()
        if self.push_grace > 0:
            self._held = set()
            self._call = self.clock.callLater(self.push_grace, self._catch_up)
        else:
            self._catch_up()

    def _learn_tokens(self) -> None:
        """The in-process APNs simulation stands for Apple's, which knows every token whoever pushes: a new
        leader's learns them from storage, so a push to a device not yet re-attached is held, not refused."""
        server = self.server
        if server.pusher is not server.apns:
            return
        try:
            for device in server.admin.labels.all_devices():
                if device.pushable:  # checked-out devices stay unknown (410 from APNs)
                    server.apns.register(device.push_token, device.topic)
        except StorageError as exc:
            log.error("reading the devices' push tokens: %s", exc.reason)

    def _catch_up(self) -> None:
        self._call = None
        held, self._held = self._held or set(), None
        pending = getattr(self.server.storage, "devices_with_pending_commands", None)
        try:
            waiting = sorted(held | set(pending() if pending is not None else ()))
        except StorageError as exc:
            log.error("listing devices with commands waiting: %s", exc.reason)
            waiting = sorted(held)
        if waiting:
            self.server.waker.push_now(waiting)
        self.catch_up_pushes = len(waiting)
        log.info("pushed %d devices with commands waiting (or pushes held while taking the lead)", len(waiting))

    def _publish(self, topic: str, words: list[str]) -> None:
        try:
            self.link.publish(topic, words)
        except StorageError as exc:  # the check-in itself is stored; the process is ending (on_lost)
            log.error("could not tell the other server processes: %s", exc.reason)

    def _lost(self, why: str) -> None:
        self.server.admin.labels.schedule.stop()
        self.on_lost(why)
