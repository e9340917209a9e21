"""The fleet end of mdmsim's push link: one connection per fleet process carrying every device's pushes.

Registrations made before the link is up are queued and attached in batches once it connects.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.protocol import ClientFactory, Protocol

from mdm_protocol.errors import MessageError
from mdm_protocol.push_link import ATTACH_BATCH, MAX_LINE, Attach, Delivery, decode_link, encode_link

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

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.disconnected()


class PushLinkClient(ClientFactory):
    """A `PushRegistry` over the push link; connect it with any client endpoint or reactor.connectTCP."""

    protocol = PushLinkClientProtocol

    def __init__(self) -> None:
        self._handlers: dict[bytes, OnPush] = {}
        self._topics: dict[bytes, str] = {}
        self._waiting: list[bytes] = []
        self._link: PushLinkClientProtocol | None = None
        self.delivered = 0

    def register(self, token: bytes, topic: str, on_push: OnPush) -> None:
        self._handlers[token], self._topics[token] = on_push, topic
        self._waiting.append(token)
        if self._link is not None:
            self._flush()

    def connected(self, link: PushLinkClientProtocol) -> None:
        # A new connection knows nothing: attach every device again (the server holds pushes meanwhile).
        self._link = link
        self._waiting = list(self._topics)
        self._flush()

    def disconnected(self) -> None:
        self._link = None

    def deliver(self, token: bytes, payload: dict[str, Any], sent_at: float | None = None) -> None:
        """Hands the push to its device; the server's send time only when the link carried one, so handlers
        taking (token, payload) keep working with servers that do not send it."""
        handler = self._handlers.get(token)
        if handler is not None:
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
