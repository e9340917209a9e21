"""The runner's side of SCEP: performs a `ScepExchange`'s HTTP requests and waits, with keys from a pool.

`ScepAgent.enroll(spec)` fires with ScepIssued or ScepFailed. HTTP goes through `WebScepHttp` (plain http or
https without verification: the CAFingerprint is what authenticates the CA, as on iOS) or `MemoryScepHttp`
(a twisted.web Site in this process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer

from mdm_protocol.clocks import TCPClock

from .enroll_fetch import exchange
from .http_session import HttpSession
from .memory_http import MemoryHTTP
from .scep_client import HttpStep, ScepExchange, ScepFailed, ScepIssued, ScepSpec, Step, WaitStep

MAX_ANSWER = 256 * 1024
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "profiled/1.0 CFNetwork/1410.0.3 Darwin/22.6.0"  # what iOS's SCEP requests carry


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    content_type: str | None
    body: bytes


class ScepHttp(Protocol):
    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        """Fires with the answer whatever its status; fails when no answer came (refused, lost, timed out)."""
        ...


@runtime_checkable
class ScepTransactions(Protocol):
    """A ScepHttp that can keep one connection for a whole SCEP transaction (`WebScepHttp`)."""

    def transaction(self) -> ScepTransaction: ...


class ScepTransaction(Protocol):
    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]: ...

    def close(self) -> None: ...


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
        http = self.http.transaction() if isinstance(self.http, ScepTransactions) else self.http
        self._step(http, exchange, exchange.start(), done)
        return done

    def _step(self, http: Any, exchange: ScepExchange, step: Step, done: defer.Deferred[Any]) -> None:
        if isinstance(step, HttpStep):
            answer = http.request(step)
            answer.addCallbacks(
                lambda got: self._step(http, exchange, exchange.answered(got.status, got.content_type, got.body),
                                       done),
                lambda failure: self._step(http, exchange, exchange.failed(failure.getErrorMessage()), done))
        elif isinstance(step, WaitStep):
            if isinstance(http, _Transaction):
                http.close()  # PENDING: nothing is kept open while the device waits to poll
            self.clock.callLater(step.seconds, lambda: self._step(http, exchange, exchange.waited(), done))
        else:
            if isinstance(http, _Transaction):
                http.close()
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


class WebScepHttp:
    """SCEP over the network, https without certificate checks (the CAFingerprint authenticates the CA), through
    the project's HTTP/1.1 codec and TLS link. iOS runs a SCEP transaction in one URL session: by default
    (`keep_alive`) its requests share one connection, opened for the transaction and closed at its end (none
    kept between devices or transactions); `keep_alive=False` opens a connection per request."""

    def __init__(self, reactor: TCPClock, *, timeout: float = DEFAULT_TIMEOUT, keep_alive: bool = True) -> None:
        self.reactor, self.timeout, self.keep_alive = reactor, timeout, keep_alive
        self.connections = 0  # opened by transactions so far

    def transaction(self) -> ScepTransaction:
        return _Transaction(self) if self.keep_alive else self  # type: ignore[return-value]

    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        self.connections += 1
        answer = exchange(self.reactor, step.url, method=step.method, body=step.body or b"",
                          content_type=step.content_type, user_agent=USER_AGENT, timeout=self.timeout,
                          max_body=MAX_ANSWER)
        return answer.addCallback(_answer)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)  # every transaction closes its own connection


class _Transaction:
    """One SCEP transaction's requests on one kept connection (`http_session.HttpSession`)."""

    def __init__(self, owner: WebScepHttp) -> None:
        self.owner = owner
        self.session = HttpSession(owner.reactor, user_agent=USER_AGENT, timeout=owner.timeout, max_body=MAX_ANSWER)

    def request(self, step: HttpStep) -> defer.Deferred[HttpAnswer]:
        opened = self.session.connections
        answer = self.session.request(step.url, method=step.method, body=step.body or b"",
                                      content_type=step.content_type)
        self.owner.connections += self.session.connections - opened
        return answer.addCallback(_answer)

    def close(self) -> None:
        self.session.close()


def _answer(got: Any) -> HttpAnswer:
    return HttpAnswer(got.status, got.headers.get("content-type"), got.body)
