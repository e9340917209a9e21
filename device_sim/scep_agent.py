"""The runner's side of SCEP: performs a `ScepExchange`'s HTTP requests and waits, with keys from a pool.

`ScepAgent.enroll(spec)` fires with ScepIssued or ScepFailed. HTTP goes through `WebScepHttp` (Twisted's
Agent, plain http or https without verification: the CAFingerprint is what authenticates the CA, as on iOS)
or `MemoryScepHttp` (a twisted.web Site in this process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL
from twisted.internet import defer, protocol, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from .memory_http import MemoryHTTP
from .scep_client import HttpStep, ScepExchange, ScepFailed, ScepIssued, ScepSpec, Step, WaitStep

MAX_ANSWER = 256 * 1024
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    content_type: str | None
    body: bytes


class ScepHttp(Protocol):
    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        """Fires with the answer whatever its status; fails when no answer came (refused, lost, timed out)."""
        ...


class RSAKeyPool:
    """RSA keys made ahead of time (~50 ms each at 2048 bits): a fleet takes one per SCEP enrollment.

    A key is handed out once; an empty pool makes keys on demand. `save`/`load` keep unused keys in a file
    (0600) so a second run starts warm; the file holds private keys of simulated devices only.
    """

    def __init__(self, keys: Iterable[rsa.RSAPrivateKey] = ()) -> None:
        self._keys: dict[int, list[rsa.RSAPrivateKey]] = {}
        for key in keys:
            self._keys.setdefault(key.key_size, []).append(key)
        self.made = 0  # keys made on demand because the pool was empty

    def fill(self, count: int, bits: int = 2048) -> None:
        self._keys.setdefault(bits, []).extend(_new_key(bits) for _ in range(count))

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._keys.values())

    def take(self, bits: int) -> rsa.RSAPrivateKey:
        keys = self._keys.get(bits)
        if keys:
            return keys.pop()
        self.made += 1
        return _new_key(bits)

    def save(self, path: Path | str) -> None:
        pem = b"".join(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
                       for keys in self._keys.values() for key in keys)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(pem)

    @classmethod
    def load(cls, path: Path | str) -> RSAKeyPool:
        marker = b"-----END PRIVATE KEY-----"
        blocks = [block + marker for block in Path(path).read_bytes().split(marker) if block.strip()]
        keys = [serialization.load_pem_private_key(block, password=None) for block in blocks]
        return cls(key for key in keys if isinstance(key, rsa.RSAPrivateKey))


def _new_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


class ScepAgent:
    """Runs SCEP exchanges for the devices of a fleet: one HTTP client, one key pool, one clock."""

    def __init__(self, http: ScepHttp, clock: Any, keys: RSAKeyPool | None = None) -> None:
        self.http, self.clock = http, clock
        self.keys = keys if keys is not None else RSAKeyPool()

    def enroll(self, spec: ScepSpec) -> defer.Deferred[ScepIssued | ScepFailed]:
        exchange = ScepExchange(spec, self.keys.take(spec.key_size), self.clock.seconds())
        done: defer.Deferred[ScepIssued | ScepFailed] = defer.Deferred()
        self._step(exchange, exchange.start(), done)
        return done

    def _step(self, exchange: ScepExchange, step: Step, done: defer.Deferred[Any]) -> None:
        if isinstance(step, HttpStep):
            answer = self.http.request(step)
            answer.addCallbacks(
                lambda got: self._step(exchange, exchange.answered(got.status, got.content_type, got.body), done),
                lambda failure: self._step(exchange, exchange.failed(failure.getErrorMessage()), done))
        elif isinstance(step, WaitStep):
            self.clock.callLater(step.seconds, lambda: self._step(exchange, exchange.waited(), done))
        else:
            done.callback(step)


class MemoryScepHttp:
    """SCEP to a twisted.web Site in this process (scenarios, tests): no sockets, the real resource tree."""

    def __init__(self, site: Any) -> None:
        self.http = MemoryHTTP(site)

    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        path = "/" + step.url.split("://", 1)[-1].partition("/")[2]
        headers = {"Content-Type": step.content_type} if step.content_type else {}
        response = self.http.request(step.method, path, step.body or b"", headers)
        return defer.succeed(HttpAnswer(response.status, response.headers.get("content-type"), response.body))


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    def __init__(self, context: SSL.Context, hostname: bytes | None) -> None:
        self.context, self.hostname = context, hostname

    def clientConnectionForTLS(self, protocol: Any) -> SSL.Connection:  # noqa: N802 - Twisted's name
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(protocol)
        if self.hostname is not None:
            connection.set_tlsext_host_name(self.hostname)
        connection.set_connect_state()
        return connection


@implementer(IPolicyForHTTPS)
class _UnverifiedPolicy:
    """https without certificate checks, one shared context (a context per connection costs a handshake)."""

    def __init__(self) -> None:
        self.context = ssl.CertificateOptions(verify=False).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unverified:  # noqa: N802 - Twisted's name
        is_address = hostname.replace(b".", b"").isdigit() or b":" in hostname
        return _Unverified(self.context, None if is_address else hostname)


class _Collect(protocol.Protocol):
    """A response body up to MAX_ANSWER bytes (readBody warns about our TLS transport, and has no limit)."""

    def __init__(self) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.size += len(data)
        if self.size > MAX_ANSWER:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]  # a response body's transport
        else:
            self.parts.append(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        if self.size > MAX_ANSWER:
            self.done.errback(ValueError(f"the answer is larger than {MAX_ANSWER} bytes"))
        elif reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


@implementer(IBodyProducer)
class _Body:
    """A request body written at once (FileBodyProducer would schedule on the global reactor's cooperator)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.length = data, len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:  # noqa: N802 - Twisted's name
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class WebScepHttp:
    """SCEP over the network with Twisted's HTTP client; connections are kept alive between requests."""

    def __init__(self, reactor: Any, *, timeout: float = DEFAULT_TIMEOUT, persistent: bool = True) -> None:
        self.reactor, self.timeout = reactor, timeout
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool.maxPersistentPerHost = 64
        self.agent = Agent(reactor, contextFactory=_UnverifiedPolicy(), pool=self.pool)

    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        headers = Headers({b"User-Agent": [b"profiled/1.0 CFNetwork/1410.0.3 Darwin/22.6.0"]})
        producer = None
        if step.body is not None:
            producer = _Body(step.body)
            headers.setRawHeaders(b"Content-Type", [(step.content_type or "application/octet-stream").encode()])
        answer = self.agent.request(step.method.encode("ascii"), step.url.encode("ascii"), headers, producer)
        read = cast("defer.Deferred[HttpAnswer]", answer.addCallback(self._read))
        return read.addTimeout(self.timeout, self.reactor)

    @staticmethod
    def _read(response: Any) -> defer.Deferred[HttpAnswer]:
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1") or None
        collector = _Collect()
        response.deliverBody(collector)
        return collector.done.addCallback(lambda data: HttpAnswer(response.code, content_type, data))

    def close(self) -> defer.Deferred[None]:
        return self.pool.closeCachedConnections()
