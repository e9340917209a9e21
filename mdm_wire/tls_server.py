"""TLS for the server's listening ports: Twisted's TLSMemoryBIOFactory, with the unbuffered protocol where the
wrapped protocol writes each answer whole. Private Twisted API lives here, beside its fallback.

`UnbufferedTLS.makeConnection` uses `factory._creatorCallable`, `_tlsConnection`, `_appSendBuffer`,
`_connectWrapped` and `_checkHandshakeStatus`; `unbuffered_fits` checks that this Twisted still has them, and the
stock protocol serves when it does not. Canary: tests/test_mdm_wire_tls.py.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol


class UnbufferedTLS(TLSMemoryBIOProtocol):
    """TLS for a protocol that writes each answer whole (the device channel): two per-connection costs removed.

    Twisted's default `BufferingTLSTransport` holds every write for a `callLater(0)` to merge small writes,
    a timer per response that a single-write answer does not need. And `TLSMemoryBIOProtocol.makeConnection`
    re-declares each interface the TCP transport provides on the wrapper with one `directlyProvides` call
    apiece (each call replaces the last): a measurable share of every accepted connection (benchmarks/RESULTS.md,
    "The TLS wrapper of the HTTP port"), for declarations nothing we serve asks for. This is that method without
    the loop.
    """

    def makeConnection(self, transport: Any) -> None:
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self._connectWrapped:
            ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()


def unbuffered_fits(factory: TLSMemoryBIOFactory) -> bool:
    """Whether this Twisted still has the private parts `UnbufferedTLS.makeConnection` uses; if a release
    renames them, the stock (buffering) protocol serves instead of a broken one."""
    return (callable(getattr(factory, "_creatorCallable", None))
            and callable(getattr(factory, "registerProtocol", None))
            and callable(getattr(TLSMemoryBIOProtocol, "_checkHandshakeStatus", None))
            and "_connectWrapped" in TLSMemoryBIOProtocol.__init__.__code__.co_varnames)


def server_tls_factory(options: ssl.CertificateOptions, wrapped: Factory, *, clock: Any,
                       whole_writes: bool = False) -> TLSMemoryBIOFactory:
    """Twisted's TLS server factory around `wrapped`; `whole_writes` (the protocol writes each answer in one
    call) picks `UnbufferedTLS` when this Twisted fits it."""
    tls = TLSMemoryBIOFactory(options, False, wrapped, clock=clock)
    if whole_writes and unbuffered_fits(tls):
        tls.protocol = UnbufferedTLS
    return tls
