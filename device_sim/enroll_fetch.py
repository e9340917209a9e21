"""Downloading an enrollment profile as a user does: over HTTPS, before the device trusts the server's CA.

iOS lets a user download a profile from an untrusted site (with a warning); its root then governs MDM.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any
from urllib.parse import urlencode, urlsplit

from OpenSSL import SSL
from twisted.internet import defer, ssl
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from mdm_protocol.clocks import TCPClock
from mdm_wire.http1 import HTTPError, Response, ResponseReader, TooLarge, Truncated, encode_request
from mdm_wire.tls_client import IOS_TLS_GROUPS, LinkFactory, TLSLink, set_groups

MAX_PROFILE = 4 * 1024 * 1024  # an enrollment profile is a few KB; a bound keeps a wrong URL from filling memory
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


class EnrollmentFetchError(Exception):
    """The profile could not be downloaded; `reason` says why (for logs and the fleet's failure list)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.cache
def _unverified_context() -> SSL.Context:
    # One context for every download: building one per connection (what Agent's policy did) costs more than
    # the handshake. Twisted's defaults (TLS 1.2+, its ciphers) with the groups Safari on iOS 9-17 offers, as
    # the fleet's check-ins do: OpenSSL 4 would lead with X25519MLKEM768, costly on both sides.
    context = ssl.CertificateOptions(verify=False).getContext()
    set_groups(context, IOS_TLS_GROUPS)
    return context


class UnverifiedTLS:
    """The TLS side of a `TLSLink` that verifies nothing, for the download only: the user taps through
    Safari's warning, as in the field (the profile's root then governs MDM)."""

    def __init__(self, hostname: str) -> None:
        try:
            ipaddress.ip_address(hostname)
            self._server_name = None  # SNI carries DNS names only (RFC 6066)
        except ValueError:
            self._server_name = hostname.encode("idna")

    def connection(self, link: TLSLink) -> SSL.Connection:
        connection = SSL.Connection(_unverified_context(), None)
        connection.set_app_data(link)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        connection.set_connect_state()
        return connection


class _Download(Protocol):
    """One request on one connection; the answer ends at its Content-Length, its last chunk, or the close.
    `done` fires with the profile (or, `any_status`, the whole Response); cancelling it (a timeout) drops the
    connection or the attempt."""

    def __init__(self, request: bytes, *, any_status: bool = False, max_body: int | None = None) -> None:
        max_body = MAX_PROFILE if max_body is None else max_body  # read at call time: tests lower it
        self.request, self.any_status, self.max_body = request, any_status, max_body
        self.done: defer.Deferred[Any] = defer.Deferred(canceller=self._cancel)
        self.reader = ResponseReader(max_body=max_body)
        self.lost = False
        self.connector: Any = None

    def connectionMade(self) -> None:
        if self.done.called:  # cancelled (timed out) while connecting
            self.transport.abortConnection()
        else:
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return  # answered, failed or cancelled: the rest is not read
        try:
            answer = self.reader.feed(data)
        except TooLarge:
            self._finish(Failure(EnrollmentFetchError(f"the answer is larger than {self.max_body} bytes")))
        except HTTPError as exc:
            self._finish(Failure(EnrollmentFetchError(exc.reason)))
        else:
            self._conclude(answer)

    def connectionLost(self, reason: Failure = None) -> None:
        self.lost = True
        try:
            self._conclude(self.reader.connection_closed())
        except Truncated as exc:
            why = "the connection closed before the whole profile arrived" if exc.in_body else exc.reason
            self._finish(Failure(EnrollmentFetchError(why)))
        except HTTPError as exc:
            self._finish(Failure(EnrollmentFetchError(exc.reason)))
        if not self.done.called:
            message = reason.getErrorMessage() if reason is not None else "connection lost"
            self.done.errback(EnrollmentFetchError(f"no answer: {message}"))

    def _conclude(self, answer: Response | None) -> None:
        if answer is None:
            return
        if self.any_status:
            self._finish(answer)
        elif answer.status == 200:
            self._finish(answer.body)
        else:
            text = answer.body[:120].decode("utf-8", "replace").strip()
            self._finish(Failure(EnrollmentFetchError(f"enrollment download answered HTTP {answer.status}: {text}")))

    def _finish(self, result: bytes | Response | Failure) -> None:
        if not self.done.called:
            if isinstance(result, Failure):
                self.done.errback(result)
            else:
                self.done.callback(result)
        if self.lost:
            return
        if isinstance(result, Failure):
            self.transport.abortConnection()  # nothing more worth reading, and maybe a lot of it
        else:
            self.transport.loseConnection()

    def connect_failed(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.errback(EnrollmentFetchError(f"cannot connect: {reason.getErrorMessage()}"))

    def _cancel(self, done: defer.Deferred) -> None:
        if self.transport is not None:
            self.transport.abortConnection()
        elif self.connector is not None:
            self.connector.stopConnecting()


class _PlainFactory(ClientFactory):
    """An http:// download (a profile server behind a proxy); https goes over the fleet's `TLSLink`."""

    noisy = False  # no "Starting factory" log line around every download

    def __init__(self, download: _Download) -> None:
        self.download = download

    def buildProtocol(self, addr: Any) -> _Download:
        return self.download

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.download.connect_failed(reason)


def fetch_enrollment(reactor: TCPClock, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> defer.Deferred[bytes]:
    """Deferred firing with the profile bytes; fails with EnrollmentFetchError on a non-200 answer, a refused
    or lost connection, or no answer within `timeout` seconds.

    One GET with `Connection: close`, as Safari downloads a .mobileconfig: https unverified, or plain http.
    """
    return _start(reactor, url, lambda parts: _Download(_request_head(parts)), timeout)


def exchange(reactor: TCPClock, url: str, *, method: str = "GET", body: bytes = b"",
             content_type: str | None = None, user_agent: str = USER_AGENT, timeout: float = DEFAULT_TIMEOUT,
             max_body: int = MAX_PROFILE) -> defer.Deferred[Response]:
    """One request on its own connection (`Connection: close`, https unverified), firing with the Response
    whatever its status: what iOS's SCEP client does, an ephemeral session per request."""
    def download(parts: Any) -> _Download:
        fields = [("Host", parts.netloc.rpartition("@")[2]), ("User-Agent", user_agent), ("Accept", "*/*"),
                  ("Connection", "close")]
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        head = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = encode_request(method.encode("ascii"), target.encode("latin-1"), head, body)
        return _Download(request, any_status=True, max_body=max_body)

    return _start(reactor, url, download, timeout)


def _start(reactor: TCPClock, url: str, make: Any, timeout: float) -> defer.Deferred[Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return defer.fail(EnrollmentFetchError(f"an enrollment URL must be http(s)://host/..., not {url!r}"))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return defer.fail(EnrollmentFetchError(f"the port in {url!r} is not a number from 0 to 65535"))
    download = make(parts)
    if parts.scheme == "https":
        factory = LinkFactory(UnverifiedTLS(parts.hostname), download, download.connect_failed)
    else:
        factory = _PlainFactory(download)
    download.connector = reactor.connectTCP(parts.hostname, port, factory, timeout=timeout)
    return download.done.addTimeout(timeout, reactor).addErrback(_timed_out, timeout)


def _timed_out(failure: Failure, timeout: float) -> Failure:
    if failure.check(defer.TimeoutError):  # ours; a caller's own cancel stays a CancelledError
        raise EnrollmentFetchError(f"no answer within {timeout:g} s")
    return failure


def _request_head(parts: Any) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = [("Host", parts.netloc.rpartition("@")[2]), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
              ("Connection", "close")]
    return encode_request(b"GET", target.encode("latin-1"),
                          [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields])


def with_user(url: str, user: str) -> str:
    """The enrollment URL for one user's device (`?user=` binds the enrollment to that user)."""
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode({'user': user})}"
