"""The fleet end of mdmsim's push link: one connection per fleet process carrying every device's pushes.

Registrations made before the link is up are queued and attached in batches once it connects. With a clock the
client keeps the link's health (drops, failed connects, time down) and can reconnect with a bounded backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import ClientFactory, Protocol

from mdm_protocol.errors import MessageError
from mdm_protocol.push_link import (
    ATTACH_BATCH,
    MAX_LINE,
    Attach,
    Delivery,
    Missed,
    Unregister,
    decode_link,
    encode_link,
)

from .runner import OnPush

log = logging.getLogger(__name__)


class PushLinkClientProtocol(Protocol):
    """Newline-delimited lines; a push to a whole fleet arrives as chunks of hundreds of lines, which one
    split handles (LineReceiver re-copies the rest of its buffer for every line)."""

    def __init__(self) -> None:
        self._partial = b""

    def connectionMade(self) -> None:
        self.factory.connected(self)

    def dataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            return  # closing after an oversized line: what follows it is not read
        lines = (self._partial + data if self._partial else data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if len(line) > MAX_LINE:
                self._too_long()
                return
            self.lineReceived(line)
            if self.transport.disconnecting:
                return
        if len(self._partial) > MAX_LINE:
            self._too_long()

    def _too_long(self) -> None:
        log.warning("push link: a line over %d bytes; closing the link", MAX_LINE)
        self._partial = b""
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = decode_link(line)
        except MessageError as exc:
            log.warning("push link: %s", exc.reason)
            return
        if isinstance(message, Delivery):
            self.factory.deliver(message.token, message.payload, message.sent_at)
        elif isinstance(message, Missed):
            self.factory.missed += sum(n for _, n in message.counts)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.disconnected()


RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # then every 30 s: a restarted server is found within that


@dataclass(frozen=True)
class LinkHealth:
    """The push link as the fleet saw it: time down counts from the client's creation until a connection."""

    connected: bool
    connects: int
    disconnects: int
    connect_failures: int
    down_seconds: float
    undeliverable: int  # pushes for a token no device of this process registered
    # Pushes the gateway accepted for our devices that they will never see, because they were unreachable (the
    # link down): replaced by a newer one or expired meanwhile. The gateway tells them when the devices attach.
    missed_while_down: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "connects": self.connects, "disconnects": self.disconnects,
                "connect_failures": self.connect_failures, "down_seconds": round(self.down_seconds, 3),
                "undeliverable": self.undeliverable, "missed_while_down": self.missed_while_down}


class PushLinkClient(ClientFactory):
    """A `PushRegistry` over the push link; connect it with any client endpoint or reactor.connectTCP."""

    protocol = PushLinkClientProtocol

    def __init__(self, clock: Any = None, *, reconnect: bool = False) -> None:
        self._handlers: dict[bytes, OnPush] = {}
        self._topics: dict[bytes, str] = {}
        self._waiting: list[bytes] = []
        self._leaving: list[bytes] = []  # unregistered while the link was down: told once it is up
        self._link: PushLinkClientProtocol | None = None
        self.delivered = 0
        self.missed = 0  # pushes the gateway says our devices never got (replaced or expired while away)
        self.clock, self.reconnect = clock, reconnect and clock is not None
        self.connects = self.disconnects = self.connect_failures = self.undeliverable = 0
        self._down_since: float | None = clock.seconds() if clock is not None else None
        self._down_total = 0.0
        self._retries = 0

    def register(self, token: bytes, topic: str, on_push: OnPush) -> None:
        self._handlers[token], self._topics[token] = on_push, topic
        self._waiting.append(token)
        if self._link is not None:
            self._flush()

    def unregister(self, token: bytes) -> None:
        """The device checked out or was erased: the gateway answers 410 for its token from now on."""
        self._handlers.pop(token, None)
        self._topics.pop(token, None)
        if token in self._waiting:
            self._waiting.remove(token)
        if self._link is not None:
            self._link.transport.write(encode_link(Unregister((token,))))
        else:
            self._leaving.append(token)

    def connected(self, link: PushLinkClientProtocol) -> None:
        # A new connection knows nothing: attach every device again (the server holds pushes meanwhile).
        self._link = link
        self.connects += 1
        self._retries = 0
        if self._down_since is not None and self.clock is not None:
            self._down_total += self.clock.seconds() - self._down_since
        self._down_since = None
        self._waiting = list(self._topics)
        leaving, self._leaving = self._leaving, []
        for start in range(0, len(leaving), ATTACH_BATCH):  # batches: a line has a bounded length
            link.transport.write(encode_link(Unregister(tuple(leaving[start : start + ATTACH_BATCH]))))
        self._flush()

    def disconnected(self) -> None:
        self._link = None
        self.disconnects += 1
        if self.clock is not None:
            self._down_since = self.clock.seconds()

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.connect_failures += 1
        log.warning("push link: cannot connect: %s", reason.getErrorMessage())
        self._again(connector)

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        self._again(connector)

    def _again(self, connector: Any) -> None:
        if self.reconnect:
            delay = RECONNECT_DELAYS[min(self._retries, len(RECONNECT_DELAYS) - 1)]
            self._retries += 1
            self.clock.callLater(delay, connector.connect)

    def stop_reconnecting(self) -> None:
        self.reconnect = False

    def health(self) -> LinkHealth:
        down = self._down_total
        if self._down_since is not None and self.clock is not None:
            down += self.clock.seconds() - self._down_since
        return LinkHealth(self._link is not None, self.connects, self.disconnects, self.connect_failures, down,
                          self.undeliverable, self.missed)

    def deliver(self, token: bytes, payload: dict[str, Any], sent_at: float | None = None) -> None:
        """Hands the push to its device; the server's send time only when the link carried one, so handlers
        taking (token, payload) keep working with servers that do not send it."""
        handler = self._handlers.get(token)
        if handler is None:
            self.undeliverable += 1
        else:
            self.delivered += 1
            if sent_at is None:
                handler(token, payload)
            else:
                handler(token, payload, sent_at)

    def _flush(self) -> None:
        by_topic: dict[str, list[bytes]] = {}
        for token in self._waiting:
            by_topic.setdefault(self._topics[token], []).append(token)
        self._waiting = []
        for topic, tokens in by_topic.items():
            for start in range(0, len(tokens), ATTACH_BATCH):
                batch = tuple(tokens[start : start + ATTACH_BATCH])
                self._link.transport.write(encode_link(Attach(topic, batch)))
