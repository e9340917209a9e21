"""End to end over real TLS on loopback: the real server, 50 simulated devices with a push link, enrolling
and installing a profile with a root, an identity and an Exchange payload.
"""

from __future__ import annotations

import base64
import time

import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer

from device_sim.enroll_fetch import fetch_enrollment
from device_sim.fleet import Fleet, FleetSpec, parse_mix
from device_sim.https_transport import HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.stats import FleetObserver
from mdm_protocol.payloads import configuration_profile, eas_payload, pkcs12_payload, root_certificate_payload
from mdm_protocol.profile import encode_profile
from mdm_protocol.profile_signing import SignatureStatus
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.pki import export_pkcs12
from mdm_wire import tls_client
from mdm_world.admin_client import AdminClient

DEVICES = 50


class Until(FleetObserver):
    """A FleetObserver that fires `reached` once a condition over its counts holds."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[object, defer.Deferred]] = []

    def wait(self, condition) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append((condition, d))
        self._check()
        return d

    def effect(self, runner, effect) -> None:
        super().effect(runner, effect)
        self._check()

    def _check(self) -> None:
        for item in list(self.waiting):
            if item[0](self):
                self.waiting.remove(item)
                item[1].callback(None)


def exchange_profile(server) -> bytes:
    cert, key = server.ca.issue_device_identity("alice@example.com", server.now())
    p12 = export_pkcs12(cert, key, "s3cret", "Alice S/MIME")
    root = root_certificate_payload(server.ca.certificate.public_bytes(serialization.Encoding.DER),
                                    identifier="com.example.mail.root")
    identity = pkcs12_payload(p12, identifier="com.example.mail.identity", password="s3cret",
                              file_name="alice.p12")
    eas = eas_payload(identifier="com.example.mail.eas", host="mail.example.com", user_name="alice",
                      email_address="alice@example.com", ssl=True, payload_certificate_uuid=identity.uuid)
    return encode_profile(configuration_profile([root, identity, eas], identifier="com.example.mail"))



@pytest_twisted.inlineCallbacks
def test_fifty_devices_enroll_and_install_an_exchange_profile_over_tls(tmp_path, monkeypatch):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                          push_link="tcp:0:interface=127.0.0.1", server_names=("127.0.0.1",))
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    push = PushLinkClient()
    link = reactor.connectTCP("127.0.0.1", server.ports[1].getHost().port, push)
    transport = HTTPSTransport(reactor)
    observer = Until()
    spec = FleetSpec(DEVICES, seed=9, os_mix=parse_mix("9.3.5:1,12.0:1,17.5:2"))
    fleet = Fleet(spec, clock=reactor, transport=transport, push=push, observer=observer)
    try:
        enroll_url = f"{server.url}/mdm/enroll?token={server.state.enroll_token}"
        for index in range(DEVICES):
            runner = fleet.add(index)
            profile = yield fetch_enrollment(reactor, enroll_url)
            runner.install_enrollment(profile)
        yield observer.wait(lambda o: o.enrolled == DEVICES).addTimeout(60, reactor)
        connections = []
        open_link = tls_client.ClientTLS.connection
        monkeypatch.setattr(tls_client.ClientTLS, "connection", lambda tls, link: connections.append(link) or
                            open_link(tls, link))
        pushed_before = time.time()

        admin = AdminClient(_memory_http(server), "admin", server.admin_password)
        ids = [r.machine.facts.device_id for r in fleet.runners]
        payload = base64.b64encode(exchange_profile(server)).decode()
        answer = admin.post("/api/v1/commands", {"deviceIds": ids,
                                                 "command": {"RequestType": "InstallProfile",
                                                             "Payload": {"$data": payload}}})
        assert all(r["push"]["pushed"] for r in answer["results"].values())
        # A session ends once the server has taken the Acknowledged report and answered with an empty body.
        yield observer.wait(lambda o: o.sessions == DEVICES).addTimeout(60, reactor)
        assert observer.commands[("InstallProfile", "Acknowledged")] == DEVICES
        # As iOS: one TLS connection per session (Idle, InstallProfile's report, the empty answer), closed at
        # its end, and the push stamped with the server's time of sending it.
        assert len(connections) == DEVICES and transport.parked == 0
        assert all(pushed_before <= r.last_push_sent_at <= r.last_push_at for r in fleet.runners)
        statuses = {c["status"] for d in ids for c in admin.get(f"/api/v1/devices/{d}/commands")["items"]}
        assert statuses == {"Acknowledged"}
    finally:
        link.disconnect()
        transport.close()
        yield server.stopService()

    for runner in fleet.runners:
        assert "com.example.mail" in runner.machine.profiles
        assert runner.machine.profiles.keychain.identity(
            runner.machine.profiles.get("com.example.mail").payloads[1]["PayloadUUID"]) is not None
        # The server signs both (SPEC 8): the enrollment profile brings our CA as its root, so at its install
        # the signer chains to nothing yet trusted (iOS: Not Verified); the later profile chains to that root.
        enrollment, mail = (runner.machine.profiles.get(name) for name in ("com.mdmsim.enrollment", "com.example.mail"))
        assert enrollment.signature is SignatureStatus.UNTRUSTED and mail.signature is SignatureStatus.VERIFIED
        assert mail.signer_certificates[0] == server.profile_signer.certificate.public_bytes(serialization.Encoding.DER)


def _memory_http(server):
    from device_sim.memory_http import MemoryHTTP

    return MemoryHTTP(server.site)
