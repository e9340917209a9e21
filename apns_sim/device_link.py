"""The server end of the push link: fleet processes connect once and receive every push for their devices.

Each connection attaches tokens to an APNs simulation (the in-process one, or the `mdmsim apns` gateway);
pushes come back as `Delivery` lines with their send time, and what a device missed while away as `Missed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from mdm_protocol.errors import MessageError
from mdm_protocol.push_link import (
    MAX_LINE,
    Attach,
    Delivery,
    Detach,
    Missed,
    Unregister,
    decode_link,
    encode_link,
)

log = logging.getLogger(__name__)


class PushEndpoints(Protocol):
    """The device side of an APNs simulation."""

    def register(self, token: bytes, topic: str) -> None: ...
    def attach(self, token: bytes, deliver: Callable[[bytes, dict, float], None], *, timed: bool) -> int | None: ...
    def detach(self, token: bytes) -> None: ...
    def unregister(self, token: bytes) -> None: ...


class PushLinkServerProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, apns: PushEndpoints) -> None:
        self.apns = apns
        self.tokens: set[bytes] = set()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = decode_link(line)
        except MessageError as exc:
            log.warning("push link: %s", exc.reason)
            return
        if isinstance(message, Attach):
            self._attach(message)
        elif isinstance(message, Detach | Unregister):
            for token in message.tokens:
                self.apns.detach(token)
                if isinstance(message, Unregister):
                    self.apns.unregister(token)
            self.tokens.difference_update(message.tokens)

    def _attach(self, message: Attach) -> None:
        missed: list[tuple[bytes, int]] = []
        for token in message.tokens:
            self.apns.register(token, message.topic)
            count = self.apns.attach(token, self._deliver, timed=True)
            if count:
                missed.append((token, count))
        self.tokens.update(message.tokens)
        if missed:
            self.transport.write(encode_link(Missed(tuple(missed))))

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warning("push link: line of %d bytes exceeds %d; closing", len(line), self.MAX_LENGTH)
        self.transport.loseConnection()

    def _deliver(self, token: bytes, payload: dict, sent_at: float) -> None:
        # The simulation runs on this process's reactor: its clock is the wall clock the fleet compares with.
        self.transport.write(encode_link(Delivery(token, payload, sent_at)))

    def connectionLost(self, reason: Any = None) -> None:
        # The whole fleet process went away: its devices are offline, pushes are held for them.
        for token in self.tokens:
            self.apns.detach(token)
        self.tokens.clear()


class PushLinkFactory(Factory):
    def __init__(self, apns: PushEndpoints) -> None:
        self.apns = apns
        self.connections: set[PushLinkServerProtocol] = set()

    def buildProtocol(self, addr: Any) -> PushLinkServerProtocol:
        protocol = _TrackedLink(self.apns, self.connections)
        protocol.factory = self
        return protocol

    def disconnect_all(self) -> None:
        """Close every fleet's link (a gateway shutting down); the fleets reconnect with backoff."""
        for link in list(self.connections):
            link.transport.loseConnection()


class _TrackedLink(PushLinkServerProtocol):
    def __init__(self, apns: PushEndpoints, connections: set[PushLinkServerProtocol]) -> None:
        super().__init__(apns)
        self._connections = connections

    def connectionMade(self) -> None:
        self._connections.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        self._connections.discard(self)
        super().connectionLost(reason)
