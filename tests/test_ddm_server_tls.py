"""DDM over real TLS on loopback: an enrolled device's DeclarativeManagement check-ins (the lean device
channel) and an asset fetch by GET (twisted.web), signed over the empty body, and refused unsigned.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from test_server_e2e_tls import CHECKIN, TLSDevice
from twisted.internet import defer, ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from mdm_protocol.checkin import Authenticate, DeclarativeManagement, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.ddm import (
    Declaration,
    DeclarationItemsResponse,
    DeclarationsStatus,
    DeclarationStatus,
    StatusReport,
    TokensResponse,
    Validity,
)
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.declarations import Offered
from mdm_server.web.ddm_assets import asset_url

UDID = "dd0e" * 10
ACCOUNT = Declaration.create("com.apple.configuration.account.mail", "mail", {
    "IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example", "AuthenticationMethod": "Password"},
    "OutgoingServer": {"HostName": "smtp.example", "AuthenticationMethod": "Password",
                       "AuthenticationCredentialsAssetReference": "login"}})


@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_ddm_check_ins_and_an_asset_fetch_over_tls(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1", push_link=None,
                          server_names=("127.0.0.1",))
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        trust = ssl.Certificate.loadPEM(server.tls.ca_certificate_pem)
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        yield run_device(server, TLSDevice(agent)).addTimeout(30, reactor)
    finally:
        yield pool.closeCachedConnections()
        yield server.stopService()


@defer.inlineCallbacks
def run_device(server: MDMServer, device: TLSDevice):
    yield device.enroll(f"{server.url}/mdm/enroll?token={server.state.enroll_token}")
    authenticate = Authenticate(topic=device.topic, udid=UDID, os_version="17.5", product_name="iPhone16,1")
    assert (yield device.put(device.checkin_url, encode_checkin(authenticate), CHECKIN)) == (200, b"")
    update = TokenUpdate(topic=device.topic, udid=UDID, token=b"\x02" * 32, push_magic="ddm")
    assert (yield device.put(device.checkin_url, encode_checkin(update), CHECKIN)) == (200, b"")
    url = asset_url(server.url, "login")
    login = Declaration.create("com.apple.asset.credential.userpassword", "login", {
        "Reference": {"DataURL": url}, "Authentication": {"Type": "MDM"}})
    server.admin.declarations.replace_source(UDID, None, "s", [
        ACCOUNT, Offered(login, "s", {"type": "userpassword", "userName": "jane"})])

    def ddm(endpoint: str, data: bytes | None = None):
        message = DeclarativeManagement(endpoint=endpoint, data=data, udid=UDID)
        return device.put(device.checkin_url, encode_checkin(message), CHECKIN)

    status, body = yield ddm("tokens")
    assert status == 200 and TokensResponse.decode(body) == server.admin.declarations.get(UDID).tokens()
    status, body = yield ddm("declaration-items")
    assert {item.identifier for _, item in DeclarationItemsResponse.decode(body).items()} == {"mail", "login"}
    status, body = yield ddm("declaration/asset/login")
    assert Declaration.decode(body) == login
    signature = mdm_signature(b"", device.identity.certificate, device.identity.private_key)
    status, body = yield device.request("GET", url, headers={"Mdm-Signature": signature})
    assert status == 200 and json.loads(body) == {"Type": "com.apple.credential.usernameandpassword",
                                                  "UserName": "jane"}
    status, body = yield device.request("GET", url)
    assert status == 403 and b"jane" not in body
    report = StatusReport.create({}, declarations=DeclarationsStatus(
        configurations=(DeclarationStatus("mail", ACCOUNT.server_token, True, Validity.VALID),)))
    assert (yield ddm("status", report.encode())) == (200, b"")
    assert server.admin.ddm_status.get(UDID).declaration(ACCOUNT.kind, "mail").active is True
