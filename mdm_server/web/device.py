"""The device-facing endpoints: PUT /mdm/checkin and PUT /mdm/connect, routed on Content-Type as Apple does
(a command report with none by its path, as mdmb sends it). They read the body and identity, call the pure service,
and write its answer; nothing else.
"""

from __future__ import annotations

import errno
import logging
from time import perf_counter

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.web import resource
from twisted.web.server import Request

from mdm_protocol.cms import SignatureError

from ..client_cert import NO_PEER, ClientCertSource, Peer
from ..identity import IdentityVerifier
from ..service import MDMService, Response
from ..storage.interface import FULL_REASON

log = logging.getLogger(__name__)

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
CONNECT_TYPE = "application/x-apple-aspen-mdm"
CHANNELS = {CHECKIN_TYPE: "checkin", CONNECT_TYPE: "connect"}  # Content-Type -> metrics label
# mdmb sends its command reports with no Content-Type: one to the server URL is a report. A check-in without
# one stays refused, since on the check-in URL both channels are accepted and nothing tells them apart.
PATH_TYPES = {b"/mdm/connect": CONNECT_TYPE}


class DeviceEndpoint(resource.Resource):
    """One MDM URL; both channels are accepted on either path and told apart by Content-Type."""

    isLeaf = True

    def __init__(self, service: MDMService, verifier: IdentityVerifier,
                 client_certs: ClientCertSource | None = None) -> None:
        super().__init__()
        self.service = service
        self.verifier = verifier
        self.client_certs = client_certs or ClientCertSource()

    def render_PUT(self, request: Request) -> bytes:
        response = self.serve(request.method, request.path, request.getHeader("content-type"),
                              request.getHeader("mdm-signature"), request.content.read(), self.peer(request))
        request.setResponseCode(response.status)
        if response.content_type:
            request.setHeader("content-type", response.content_type)
        if response.retry_after is not None:
            request.setHeader("retry-after", str(response.retry_after))
        return response.body

    render_POST = render_PUT  # some MDM clients and proxies use POST for the check-in channel

    def peer(self, request: Request) -> Peer:
        """Who the request came from: address, TLS client certificate, the proxy's header."""
        header = self.client_certs.header
        value = None if header is None else request.getHeader(header)
        address = request.getClientAddress()
        return Peer(getattr(address, "host", None), peer_certificate(request.channel.transport),
                    None if value is None else value.encode("latin-1"))

    def serve(self, method: bytes, path: bytes, content_type: str | None, signature: str | None,
              body: bytes, peer: Peer = NO_PEER) -> Response:
        """The answer to one device request, timed into the metrics; both HTTP edges (twisted.web and the
        lean device channel) call this and only write what it returns. `peer`: the TLS client certificate,
        the proxy's client-certificate header and the address they came from."""
        started = perf_counter()
        kind = (content_type or "").split(";")[0].strip().lower()
        if not kind:
            kind = PATH_TYPES.get(path.partition(b"?")[0], "")
        try:
            response = self._answer(kind, signature, body, peer)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            log.error("%s %s: no space left for a write: %s", method.decode("latin-1"), path.decode("latin-1"), exc)
            response = Response.unavailable(FULL_REASON)
        self.service.metrics.request_done(CHANNELS.get(kind, "other"), perf_counter() - started)
        if response.reason:
            log.info("%s %s refused: %s", method.decode("latin-1"), path.decode("latin-1"), response.reason)
        return response

    def _answer(self, content_type: str, signature: str | None, body: bytes, peer: Peer) -> Response:
        if content_type not in CHANNELS:
            return Response.refuse(f"unsupported Content-Type {content_type!r}")
        try:
            certificate = self.client_certs.certificate(peer)
            identity = self.verifier.identify(signature, body, certificate)
        except SignatureError as exc:
            return Response.refuse(f"device identity refused: {exc.reason}")
        if content_type == CHECKIN_TYPE:
            return self.service.handle_checkin(identity, body)
        return self.service.handle_command_report(identity, body)


def peer_certificate(transport: object) -> bytes | None:
    """DER of the TLS client certificate `transport` (Twisted's TLS protocol) carries; None without TLS or
    without a certificate (a device that signs its bodies instead)."""
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        certificate = get()
    except Exception:  # noqa: BLE001 - no handshake yet (a plain TCP port says so differently): no certificate
        return None
    return None if certificate is None else certificate.to_cryptography().public_bytes(Encoding.DER)
