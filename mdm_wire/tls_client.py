"""Client TLS for the fleet's HTTPS: OpenSSL memory BIOs driven straight from a TCP protocol, one per connection.

Twisted's TLS wrapper costs more per connection than the handshake it drives (factories, logging, interfaces).
Private API used here, each with its fallback and its canary in tests/test_mdm_wire_tls.py:
- `OpenSSL._util.lib.SSL_CTX_set1_curves_list` (`set_groups`): without it, OpenSSL's default groups (logged once);
- `transport.getHandle().send` (`TLSLink._write`): without a socket handle, Twisted's own `transport.write`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
from typing import Any

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

# The key exchange groups iOS 9 to 17 offer, in its order. OpenSSL 3.5+ would lead with the hybrid
# X25519MLKEM768 (iOS 26 and later), whose ML-KEM key generation costs the client ~20% of a resumed session.
log = logging.getLogger(__name__)
IOS_TLS_GROUPS = "X25519:P-256:P-384:P-521"
READ_SIZE = 1 << 17  # bytes taken from a BIO per call: every record of an MDM exchange fits in one
MAX_LEAVES = 64  # server certificates whose name check is remembered
MAX_SESSIONS = 100_000  # client identities whose last session is kept (about 1 KB each)


class UntrustedServerError(SSL.Error):
    """The server's certificate failed the device's checks (chain to its roots, or the name): what iOS reports
    as an untrusted server, as opposed to any other TLS failure (an alert, no shared group, a reset)."""


class ClientCredential:
    """A client certificate and its key (cryptography objects), named by the certificate's SHA-256: what a
    device presents in mutual TLS, and the name its TLS sessions are kept under."""

    __slots__ = ("certificate", "key", "name")

    def __init__(self, certificate: Any, key: Any) -> None:
        self.certificate, self.key = certificate, key
        self.name: bytes = certificate.fingerprint(hashes.SHA256())


class ClientTLS:
    """The TLS client side for one server name and trust store: Twisted's context, verified like Twisted's
    `optionsForClientTLS` (chain to the trust store, then the name), plus the last session to resume, one per
    client identity: a resumed session carries the identity it was made with, so no device resumes another's."""

    def __init__(self, hostname: str, trust: Any, *, groups: str | None = IOS_TLS_GROUPS) -> None:
        self.context = ssl.CertificateOptions(trustRoot=trust).getContext()
        if groups is not None:
            set_groups(self.context, groups)
        self._service: DNS_ID | IPAddress_ID
        self._server_name: bytes | None
        try:
            ipaddress.ip_address(hostname)
            self._service, self._server_name = IPAddress_ID(hostname), None  # no SNI for an address
        except ValueError:
            self._service, self._server_name = DNS_ID(hostname), hostname.encode("idna")
        self._names_checked: dict[bytes, str | None] = {}  # leaf digest → mismatch reason (None: it matches)
        self.context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        self.session: SSL.Session | None = None  # the anonymous client's (no client certificate)
        self._sessions: dict[bytes, SSL.Session] = {}  # client certificate fingerprint → its last session

    def connection(self, link: TLSLink) -> SSL.Connection:
        """A client connection for `link`, with its client certificate (`link.credential`) if it has one."""
        credential = link.credential
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(link)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        session = self.session
        if credential is not None:
            connection.use_certificate(credential.certificate)
            connection.use_privatekey(credential.key)
            session = self._sessions.get(credential.name)
        if session is not None:
            connection.set_session(session)
        connection.set_connect_state()
        return connection

    def keep_session(self, credential: ClientCredential | None, session: SSL.Session) -> None:
        """Resume `session` on the next connection made with `credential` (None: without a certificate)."""
        if credential is None:
            self.session = session
            return
        if len(self._sessions) >= MAX_SESSIONS and credential.name not in self._sessions:
            self._sessions.clear()
        self._sessions[credential.name] = session

    def _verify(self, connection: SSL.Connection, certificate: Any, error: int, depth: int, ok: int) -> bool:
        if not ok:  # OpenSSL's chain check failed: say so, or the handshake's error would read as any TLS error
            reason = f"the server certificate does not chain to a trusted root (X509 error {error}, depth {depth})"
            connection.get_app_data().verification_failed(reason)
            return False
        if depth != 0:
            return True
        try:
            # A resumed session skips this; a full handshake meets the same leaf each time: check its name once.
            digest = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)).digest()
            if digest not in self._names_checked:
                if len(self._names_checked) >= MAX_LEAVES:
                    self._names_checked.clear()
                self._names_checked[digest] = self._name_mismatch(certificate)
            reason = self._names_checked[digest]
        except Exception as exc:  # an exception raised into OpenSSL's callback would be lost
            reason = f"unreadable server certificate: {exc}"
        if reason is not None:
            connection.get_app_data().verification_failed(reason)
        return reason is None

    def _name_mismatch(self, certificate: Any) -> str | None:
        try:
            verify_service_identity(extract_patterns(certificate), [self._service], [])
        except VerificationError as exc:
            return f"the server certificate is not for {self._service}: {exc}"
        return None


def check_groups(groups: str) -> None:
    """A ValueError with the reason unless OpenSSL knows every group named."""
    set_groups(SSL.Context(SSL.TLS_CLIENT_METHOD), groups)


def set_groups(context: SSL.Context, groups: str) -> None:
    """Offer these key exchange groups; a ValueError if OpenSSL refuses them. If pyOpenSSL no longer has the
    private parts this needs, OpenSSL's defaults stay (logged once): slower handshakes, never a broken fleet."""
    # pyOpenSSL has no public call for the groups list; its cryptography binding has OpenSSL's.
    try:
        from OpenSSL._util import lib

        result = lib.SSL_CTX_set1_curves_list(context._context, groups.encode("ascii"))
    except (ImportError, AttributeError) as exc:
        _groups_unavailable(f"{type(exc).__name__}: {exc}")
        return
    if result != 1:
        raise ValueError(f"OpenSSL refused the TLS groups {groups!r}")


@functools.cache
def _groups_unavailable(why: str) -> None:
    log.warning("cannot choose TLS key exchange groups with this pyOpenSSL (%s); OpenSSL's defaults apply", why)


class TLSLink(Protocol):
    """One TCP connection carrying TLS for one application object (`app`): the app sees `write`,
    `loseConnection`, `abortConnection` and `getHandle` here, and gets `connectionMade`, `dataReceived` and
    `connectionLost` back. Writes made before the handshake completes leave with the client's Finished."""

    transport: Any  # a TCP transport: ITCPTransport's abortConnection and ISystemHandle's getHandle are used

    def __init__(self, tls: ClientTLS, app: Any, credential: ClientCredential | None = None) -> None:
        self.tls, self.app, self.credential = tls, app, credential
        self.connection: SSL.Connection | None = None
        self.handshaken = self.closing = self.lost = False
        self.unsent: list[bytes] = []
        self.direct = True  # every byte so far went straight to the socket
        self.failure: Failure | None = None  # why TLS failed, reported instead of the TCP reason

    def getHandle(self) -> SSL.Connection:
        return self.connection

    def connectionMade(self) -> None:
        self.direct = _sends_directly(self.transport)
        self.connection = self.tls.connection(self)
        self.app.transport = self
        self.app.connectionMade()
        if not self.lost and not self.closing:
            self._step()
            self._flush()

    def write(self, data: bytes) -> None:
        if self.closing or self.lost:
            return
        if not self.handshaken:
            self.unsent.append(data)
            return
        self._send(data)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        connection = self.connection
        connection.bio_write(data)
        if not self.handshaken:
            self._step()
            if self.unsent and self.handshaken:
                self._send(b"".join(self.unsent))
                self.unsent.clear()
            self._flush()
            if not self.handshaken:
                return
        while not self.lost:
            try:
                plain = connection.recv(READ_SIZE)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:  # the server's close_notify: answer it and close
                self._shut_down()
                return
            except SSL.Error:
                self._fail(Failure())
                return
            if not self.closing:
                self.app.dataReceived(plain)

    def loseConnection(self) -> None:
        """Send close_notify; TCP closes once the server answers with its own (as Twisted's TLS does)."""
        if self.closing or self.lost:
            return
        self.closing = True
        if not self.handshaken:
            self.transport.abortConnection()
            return
        self._shut_down()

    def abortConnection(self) -> None:
        self.closing = True
        if not self.lost:
            self.transport.abortConnection()

    def verification_failed(self, reason: str) -> None:
        self.failure = Failure(UntrustedServerError(reason))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.lost:
            return
        self.lost = True
        # Break the link ↔ app and link ↔ SSL.Connection cycles: plain refcounting frees them, no GC pass.
        app, self.app = self.app, None
        if self.connection is not None:
            self.connection.set_app_data(None)
        app.connectionLost(self.failure or reason)

    def _step(self) -> None:
        try:
            self.connection.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error:
            self._fail(Failure())
            return
        self.handshaken = True

    def _send(self, data: bytes) -> None:
        # A memory BIO takes every record, so one SSL_write sends it all (pyOpenSSL's sendall costs ~3x more);
        # with partial writes on, a view keeps a large body from being copied once per 16 KB record.
        view = memoryview(data)
        try:
            while view:
                view = view[self.connection.send(view):]
        except SSL.Error:
            self._fail(Failure())

    def _flush(self) -> None:
        while True:
            try:
                data = self.connection.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            self._write(data)
            if len(data) < READ_SIZE:
                return

    def _write(self, data: bytes) -> None:
        # Straight to the socket while nothing waits in Twisted's buffer: its write() waits for the next
        # poll (two epoll changes and a loop turn per TLS flight, three flights per session).
        if self.direct:
            try:
                sent = self.transport.getHandle().send(data)
            except OSError:  # EAGAIN, or an error Twisted will meet and report on its next write
                sent = 0
            if sent == len(data):
                return
            data, self.direct = data[sent:], False
        self.transport.write(data)

    def _shut_down(self) -> None:
        try:
            done = self.connection.shutdown()
        except SSL.Error:
            done = True
        self._flush()
        if done:
            self.transport.loseConnection()

    def _fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
        self.closing = True
        self._flush()  # an alert for the server, when OpenSSL made one
        self.transport.loseConnection()


def _sends_directly(transport: Any) -> bool:
    """Whether the TCP transport shows its socket (`getHandle().send`): Twisted's TCP transports do; any other
    (a test's, a future Twisted's) gets the stock `transport.write` path."""
    handle = getattr(transport, "getHandle", None)
    return callable(handle) and callable(getattr(handle(), "send", None))


class LinkFactory(ClientFactory):
    """One connection attempt; quiet, because a fleet makes thousands a second."""

    noisy = False

    def __init__(self, tls: ClientTLS, app: Any, failed: Any, credential: ClientCredential | None = None) -> None:
        self.tls, self.app, self.failed, self.credential = tls, app, failed, credential

    def buildProtocol(self, addr: Any) -> TLSLink:
        return TLSLink(self.tls, self.app, self.credential)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed(reason)
