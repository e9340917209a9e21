"""An HTTPS CONNECT proxy that answers for api.push.apple.com itself: servers that hard-code Apple's host
(NanoMDM, Zentral) reach the gateway unmodified with HTTPS_PROXY and a trust store holding the gateway's CA.

After `CONNECT api.push.apple.com:443` the tunnel is not forwarded anywhere: TLS ends here, with the gateway's
certificate (it names Apple's hosts), and the provider API speaks inside it. Other hosts get 403.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from .h2_server import ProviderFactory
from .push_certificate import APPLE_HOSTS

MAX_HEAD = 8192
APPLE_PORTS = ("443", "2197")


class ConnectProxyProtocol(Protocol):
    def __init__(self, tls: TLSMemoryBIOFactory, addr: Any) -> None:
        self._tls, self._addr = tls, addr
        self._head = b""
        self._tunnel: Any = None  # the TLS protocol once CONNECT was answered

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.dataReceived(data)
            return
        self._head += data
        if b"\r\n\r\n" not in self._head:
            if len(self._head) > MAX_HEAD:
                self._refuse(b"431 Request Header Fields Too Large")
            return
        head, _, rest = self._head.partition(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or parts[0] != b"CONNECT":
            self._refuse(b"405 Method Not Allowed")
            return
        host, _, port = parts[1].decode("ascii", "replace").rpartition(":")
        if host.lower() not in APPLE_HOSTS or port not in APPLE_PORTS:
            self._refuse(b"403 Forbidden")  # this proxy only plays Apple's push hosts
            return
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._tunnel = self._tls.buildProtocol(self._addr)
        self._tunnel.makeConnection(self.transport)
        if rest:
            self._tunnel.dataReceived(rest)

    def _refuse(self, status: bytes) -> None:
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._tunnel is not None:
            self._tunnel.connectionLost(reason)


class ConnectProxyFactory(Factory):
    def __init__(self, provider: ProviderFactory, options: ssl.CertificateOptions, *, clock: Any) -> None:
        self.tls = TLSMemoryBIOFactory(options, False, provider, clock=clock)

    def buildProtocol(self, addr: Any) -> ConnectProxyProtocol:
        return ConnectProxyProtocol(self.tls, addr)
