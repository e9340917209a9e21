"""GET /mdm/ddm/asset/<identifier>[?user=<channel user>]: the data behind a DDM asset's Reference.DataURL.

The device authenticates as it does on the MDM URLs (Authentication.Type MDM): an Mdm-Signature over the empty
body, or its TLS client certificate. The answer comes from declarative.DeclarativeService.asset.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from twisted.web import resource
from twisted.web.server import Request

from mdm_protocol.cms import SignatureError

from ..declarative import DeclarativeService, forbidden, not_found
from ..service import Response
from .device import DeviceEndpoint

ASSET_PATH = "/mdm/ddm/asset/"


def asset_url(server_url: str, identifier: str, user: str | None = None) -> str:
    """The DataURL of asset `identifier` on the device channel, or on user channel `user`."""
    url = f"{server_url.rstrip('/')}{ASSET_PATH}{quote(identifier, safe='')}"
    return url if user is None else f"{url}?{urlencode({'user': user})}"


class AssetResource(resource.Resource):
    """Serves asset data to the one device (and channel) it was declared to."""

    isLeaf = True

    def __init__(self, declarative: DeclarativeService, device: DeviceEndpoint) -> None:
        super().__init__()
        self.declarative, self.device = declarative, device

    def render_GET(self, request: Request) -> bytes:
        response = self._answer(request)
        request.setResponseCode(response.status)
        if response.content_type:
            request.setHeader("content-type", response.content_type)
        request.setHeader("cache-control", "no-store")  # it holds a private key and its password
        return response.body

    def _answer(self, request: Request) -> Response:
        parts: list[bytes] = request.postpath or []
        args: dict[bytes, list[bytes]] = request.args or {}
        users = args.get(b"user", [])
        if len(parts) != 1 or not parts[0] or len(users) > 1 or set(args) - {b"user"}:
            return not_found("no such asset")
        try:
            identifier = parts[0].decode("utf-8")
            user = users[0].decode("utf-8") if users else None
        except UnicodeDecodeError:
            return not_found("no such asset")
        try:
            certificate = self.device.client_certs.certificate(self.device.peer(request))
            signature = request.getHeader("mdm-signature")
            if signature is None and certificate is None:
                return self.declarative.asset(None, identifier, user)
            identity = self.device.verifier.identify(signature, b"", certificate)
        except SignatureError as exc:
            return forbidden(f"device identity refused: {exc.reason}")
        return self.declarative.asset(identity, identifier, user)
