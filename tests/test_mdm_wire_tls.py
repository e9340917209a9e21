"""Canaries for every private Twisted and pyOpenSSL call in mdm_wire's TLS edges: each works on this Twisted and
pyOpenSSL, and each falls back to the stock path when its private part is gone.

Server: `UnbufferedTLS` sets up a connection as Twisted's own protocol does (minus the interface
re-declarations). Client: `set_groups` (OpenSSL's groups call through pyOpenSSL's binding) and `TLSLink`'s
writes straight to the socket (`getHandle().send`)."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.serialization import Encoding
from server_kit import make_server
from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from mdm_server.ca import CertificateAuthority
from mdm_server.web.tls import server_options
from mdm_wire import tls_client
from mdm_wire.tls_server import UnbufferedTLS, server_tls_factory, unbuffered_fits

# Server: UnbufferedTLS ----------------------------------------------------------------------------------------


class Recorder(Protocol):
    def connectionMade(self) -> None:
        self.made = True


def tls_factory(server) -> TLSMemoryBIOFactory:
    options = server_options(server.tls.certificate_pem, server.tls.private_key_pem, server.tls.ca_certificate_pem)
    return TLSMemoryBIOFactory(options, False, Factory.forProtocol(Recorder), clock=Clock())


def connected(factory: TLSMemoryBIOFactory, protocol_class: type) -> TLSMemoryBIOProtocol:
    factory.protocol = protocol_class
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol


def test_unbuffered_connection_state_matches_twisteds_own(tmp_path):
    factory = tls_factory(make_server(tmp_path))
    assert unbuffered_fits(factory)
    ours, stock = connected(factory, UnbufferedTLS), connected(factory, TLSMemoryBIOProtocol)
    assert set(vars(ours)) == set(vars(stock))
    assert ours.wrappedProtocol.made and ours.getHandle() is not None and ours in factory.protocols


def test_a_twisted_without_the_private_parts_gets_the_stock_protocol(tmp_path):
    factory = tls_factory(make_server(tmp_path))
    del factory._creatorCallable
    assert not unbuffered_fits(factory)


def test_the_server_factory_picks_the_unbuffered_protocol_only_for_whole_writes(tmp_path, monkeypatch):
    server = make_server(tmp_path)
    options = server_options(server.tls.certificate_pem, server.tls.private_key_pem)
    wrapped = Factory.forProtocol(Recorder)
    assert server_tls_factory(options, wrapped, clock=Clock(), whole_writes=True).protocol is UnbufferedTLS
    stock = server_tls_factory(options, wrapped, clock=Clock()).protocol
    assert stock is not UnbufferedTLS and issubclass(stock, TLSMemoryBIOProtocol)  # Twisted's buffering one
    monkeypatch.setattr("mdm_wire.tls_server.unbuffered_fits", lambda factory: False)
    assert server_tls_factory(options, wrapped, clock=Clock(), whole_writes=True).protocol is stock


# Client: set_groups and direct socket writes ------------------------------------------------------------------


def test_a_pyopenssl_without_the_private_groups_call_keeps_openssls_defaults(monkeypatch, caplog):
    import OpenSSL._util

    monkeypatch.delattr(OpenSSL._util.lib, "SSL_CTX_set1_curves_list", raising=False)
    context = tls_client.SSL.Context(tls_client.SSL.TLS_CLIENT_METHOD)
    tls_client.set_groups(context, "P-256")  # no error: the fleet still runs, with OpenSSL's groups
    assert "OpenSSL's defaults apply" in caplog.text


def test_the_groups_call_works_on_this_pyopenssl():
    tls_client.check_groups("X25519:P-256")  # the private call is there and OpenSSL takes the names


class _App(Protocol):
    def dataReceived(self, data: bytes) -> None:
        raise AssertionError("no server here")


class _Socket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)


class _SocketTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.socket = _Socket()

    def getHandle(self) -> _Socket:
        return self.socket


def _client_tls() -> tls_client.ClientTLS:
    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    pem = ca.certificate.public_bytes(Encoding.PEM)
    return tls_client.ClientTLS("mdm.example.test", ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem)]))


def test_the_client_hello_goes_straight_to_a_socket_transport():
    transport = _SocketTransport()
    link = tls_client.TLSLink(_client_tls(), _App())
    link.makeConnection(transport)
    assert link.direct and transport.socket.sent[0][:1] == b"\x16" and transport.value() == b""


def test_a_transport_without_a_socket_gets_twisteds_write():
    transport = StringTransport()  # no getHandle: what a Twisted that hid the socket would look like
    link = tls_client.TLSLink(_client_tls(), _App())
    link.makeConnection(transport)
    assert not link.direct and transport.value()[:1] == b"\x16"  # the ClientHello, through transport.write
