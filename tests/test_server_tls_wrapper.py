"""The HTTP port's TLS wrapper: `UnbufferedTLS` sets up a connection as Twisted's own protocol does (minus the
interface re-declarations), and falls back to the stock protocol if Twisted's private parts change."""

from __future__ import annotations

from server_kit import make_server
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from mdm_server.web.tls import UnbufferedTLS, server_options, unbuffered_fits


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
