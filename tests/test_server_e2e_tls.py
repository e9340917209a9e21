"""End to end over real TLS on loopback: enroll, Authenticate, TokenUpdate, receive a command, Acknowledge.

The server listens on port 0 in pytest-twisted's reactor; the client is twisted.web's Agent trusting our CA.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet import defer, ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from mdm_protocol.checkin import Authenticate, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.pki import load_pkcs12
from mdm_server.storage.interface import CommandStatus, EnrollmentState

UDID = "e2e0" * 10
CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm"


@implementer(IBodyProducer)
class BytesBody:
    """A request body known up front (devices send small plists), written in one go."""

    def __init__(self, data: bytes) -> None:
        self.data, self.length = data, len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


class TLSDevice:
    """A minimal iOS-like client: the enrollment profile's identity, signed PUTs to its URLs."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.identity = None

    @defer.inlineCallbacks
    def request(self, method: str, url: str, body: bytes = b"", headers: dict | None = None):
        raw = Headers({name: [value] for name, value in (headers or {}).items()})
        producer = BytesBody(body) if body else None
        response = yield self.agent.request(method.encode(), url.encode(), raw, producer)
        data = yield readBody(response)
        return response.code, data

    @defer.inlineCallbacks
    def enroll(self, url: str):
        status, data = yield self.request("GET", url)
        assert status == 200, data
        profile = parse_profile(unsigned(data))
        (p12,) = profile.payloads_of_type("com.apple.security.pkcs12")
        (mdm,) = profile.payloads_of_type("com.apple.mdm")
        self.identity = load_pkcs12(p12.content["PayloadContent"], p12.content["Password"])
        self.topic, self.server_url, self.checkin_url = (
            mdm.content["Topic"], mdm.content["ServerURL"], mdm.content["CheckInURL"]
        )

    def put(self, url: str, body: bytes, content_type: str):
        signature = mdm_signature(body, self.identity.certificate, self.identity.private_key)
        return self.request("PUT", url, body, {"Content-Type": content_type, "Mdm-Signature": signature})


# Twisted's own HTTP/1.1 client transport lacks abortConnection; readBody warns about it on every call.
@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_enroll_and_run_a_session_over_tls(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1", push_link=None,
                          server_names=("127.0.0.1",))
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        port = server.ports[0].getHost().port
        assert port != 0 and server.url == f"https://127.0.0.1:{port}"
        trust = ssl.Certificate.loadPEM(server.tls.ca_certificate_pem)
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        yield run_device(server, TLSDevice(agent), port).addTimeout(30, reactor)
    finally:
        yield pool.closeCachedConnections()
        yield server.stopService()


@defer.inlineCallbacks
def run_device(server: MDMServer, device: TLSDevice, port: int):
    yield device.enroll(f"{server.url}/mdm/enroll?token={server.state.enroll_token}")
    # The profile carries the port the system picked, not the 0 of the listen description.
    assert urlsplit(device.checkin_url).port == port
    assert device.topic == server.state.topic

    token = b"\x01" * 32
    authenticate = Authenticate(topic=device.topic, udid=UDID, os_version="18.1", product_name="iPhone17,1")
    assert (yield device.put(device.checkin_url, encode_checkin(authenticate), CHECKIN)) == (200, b"")
    update = TokenUpdate(topic=device.topic, udid=UDID, token=token, push_magic="e2e-magic")
    assert (yield device.put(device.checkin_url, encode_checkin(update), CHECKIN)) == (200, b"")
    assert server.storage.get_device(UDID).state is EnrollmentState.ENROLLED

    basic = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    request = {"deviceIds": [UDID], "command": {"RequestType": "DeviceInformation", "Queries": ["UDID"]}}
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
    status, data = yield device.request(
        "POST", f"{server.url}/api/v1/commands", json.dumps(request).encode(), headers
    )
    assert status == 201, data
    uuid = json.loads(data)["results"][UDID]["commandUuid"]

    status, data = yield device.put(device.server_url, encode_report(CommandReport(Status.IDLE, udid=UDID)),
                                    CONNECT)
    command = decode_server_response(data)
    assert (status, command.command_uuid, command.request_type) == (200, uuid, "DeviceInformation")
    answer = CommandReport(Status.ACKNOWLEDGED, udid=UDID, command_uuid=uuid,
                           extra={"QueryResponses": {"UDID": UDID}})
    assert (yield device.put(device.server_url, encode_report(answer), CONNECT)) == (200, b"")
    stored = server.storage.get_command(UDID, uuid)
    assert stored.status is CommandStatus.ACKNOWLEDGED
    assert stored.result == encode_report(answer)
