"""The server end of the push link: fleet processes connect once and receive every push for their devices.

Each connection attaches tokens to the APNs simulation; pushes come back as `Delivery` lines with their send time.
"""

from __future__ import annotations

import logging

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from mdm_protocol.errors import MessageError
from mdm_protocol.push_link import MAX_LINE, Attach, Delivery, Detach, decode_link, encode_link

from .apns_sim import APNsSimulation

log = logging.getLogger(__name__)


class PushLinkServerProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, apns: APNsSimulation) -> None:
        self.apns = apns
        self.tokens: set[bytes] = set()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = decode_link(line)
        except MessageError as exc:
            log.warning("push link: %s", exc.reason)
            return
        if isinstance(message, Attach):
            for token in message.tokens:
                self.apns.register(token, message.topic)
                self.apns.attach(token, self._deliver, timed=True)
            self.tokens.update(message.tokens)
        elif isinstance(message, Detach):
            for token in message.tokens:
                self.apns.detach(token)
            self.tokens.difference_update(message.tokens)

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warning("push link: line of %d bytes exceeds %d; closing", len(line), self.MAX_LENGTH)
        self.transport.loseConnection()

    def _deliver(self, token: bytes, payload: dict, sent_at: float) -> None:
        # The APNs simulation runs on the server's reactor: its clock is the wall clock the fleet compares with.
        self.transport.write(encode_link(Delivery(token, payload, sent_at)))

    def connectionLost(self, reason=None) -> None:
        # The whole fleet process went away: its devices are offline, pushes are held for them.
        for token in self.tokens:
            self.apns.detach(token)
        self.tokens.clear()


class PushLinkFactory(Factory):
    def __init__(self, apns: APNsSimulation) -> None:
        self.apns = apns

    def buildProtocol(self, addr) -> PushLinkServerProtocol:
        protocol = PushLinkServerProtocol(self.apns)
        protocol.factory = self
        return protocol
