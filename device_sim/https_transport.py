"""Real HTTPS from simulated devices: TLS checked against each device's own trust store, like iOS.

A new TLS connection per session by default (as iOS does); keep-alive on request for load tests.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL
from twisted.internet import defer, ssl
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseNeverReceived, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .effects import SendRequest
from .transport import Reply, TransportError


@implementer(IPolicyForHTTPS)
class _TrustPolicy:
    def __init__(self, roots: tuple[x509.Certificate, ...]) -> None:
        pem = [ssl.Certificate.loadPEM(r.public_bytes(serialization.Encoding.PEM)) for r in roots]
        self._trust = ssl.trustRootFromCertificates(pem) if pem else None
        self._options: dict[bytes, Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int):
        if hostname not in self._options:
            if self._trust is None:
                raise TransportError("the device trusts no root certificate", untrusted=True)
            self._options[hostname] = ssl.optionsForClientTLS(hostname.decode("idna"), trustRoot=self._trust)
        return self._options[hostname]


class HTTPSTransport:
    """One Agent per distinct trust store; a fleet whose devices trust the same CA shares one."""

    def __init__(self, reactor: Any, *, keep_alive: bool = False, timeout: float = 30.0) -> None:
        self.reactor = reactor
        self.keep_alive = keep_alive
        self.timeout = timeout
        self._agents: dict[tuple[bytes, ...], Agent] = {}

    def _agent(self, roots: tuple[x509.Certificate, ...]) -> Agent:
        key = tuple(sorted(r.fingerprint(hashes.SHA256()) for r in roots))
        if key not in self._agents:
            pool = HTTPConnectionPool(self.reactor, persistent=self.keep_alive)
            pool.maxPersistentPerHost = 10_000
            self._agents[key] = Agent(self.reactor, contextFactory=_TrustPolicy(roots), pool=pool,
                                      connectTimeout=self.timeout)
        return self._agents[key]

    @defer.inlineCallbacks
    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...]):
        if urlsplit(request.url).scheme != "https":
            raise TransportError(f"iOS only talks to MDM over https, not {request.url}")
        headers = Headers({b"content-type": [request.content_type.encode()],
                           b"mdm-signature": [request.signature.encode()]})
        try:
            response = yield self._agent(roots).request(
                b"PUT", request.url.encode(), headers, FileBodyProducer(BytesIO(request.body))
            ).addTimeout(self.timeout, self.reactor)
            body = yield readBody(response)
        except ResponseNeverReceived as exc:
            untrusted = any(f.check(SSL.Error) for f in exc.reasons)
            reason = exc.reasons[0].getErrorMessage()
            raise TransportError(f"no response: {reason}", untrusted=untrusted) from None
        except (defer.TimeoutError, defer.CancelledError):
            raise TransportError(f"timed out after {self.timeout:g}s") from None
        except TransportError:
            raise
        except Exception as exc:  # connection refused, DNS, TLS setup: all transport failures to a device
            untrusted = isinstance(exc, SSL.Error)
            raise TransportError(f"{type(exc).__name__}: {exc}", untrusted=untrusted) from None
        return Reply(response.code, body)
