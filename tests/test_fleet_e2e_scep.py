"""End to end over real TLS on loopback with `--enrollment-identity scep`: devices download their profile,
enroll at /scep over https with their own RSA keys, then check in signed with the identity SCEP gave them.
"""

from __future__ import annotations

import pytest_twisted
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer

from device_sim.enroll_fetch import exchange, fetch_enrollment
from device_sim.fleet import Fleet, FleetSpec, parse_mix
from device_sim.https_transport import HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.scep_agent import RSAKeyPool, ScepAgent, WebScepHttp
from device_sim.stats import FleetObserver
from mdm_protocol.profile_signing import SignatureStatus
from mdm_server.app import MDMServer, ServerConfig
from mdmsim.cli import build_parser

DEVICES = 8


class Enrolled(FleetObserver):
    """Fires `all_enrolled` once `count` devices have enrolled."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.all_enrolled: defer.Deferred[None] = defer.Deferred()

    def effect(self, runner, effect) -> None:
        super().effect(runner, effect)
        if self.enrolled == self.count and not self.all_enrolled.called:
            self.all_enrolled.callback(None)


@pytest_twisted.inlineCallbacks
def test_devices_enroll_by_scep_over_tls_and_check_in(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                          push_link="tcp:0:interface=127.0.0.1", server_names=("127.0.0.1",),
                          enrollment_identity="scep")
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    push = PushLinkClient()
    link = reactor.connectTCP("127.0.0.1", server.ports[1].getHost().port, push)
    transport, http = HTTPSTransport(reactor), WebScepHttp(reactor)
    keys = RSAKeyPool(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(DEVICES))
    observer = Enrolled(DEVICES)
    fleet = Fleet(FleetSpec(DEVICES, seed=5, os_mix=parse_mix("12.0:1,17.5:1")), clock=reactor,
                  transport=transport, push=push, observer=observer, scep=ScepAgent(http, reactor, keys))
    try:
        for index in range(DEVICES):
            runner = fleet.add(index)
            profile = yield fetch_enrollment(reactor, f"{server.url}/mdm/enroll?token={server.state.enroll_token}")
            assert b"com.apple.security.scep" in profile and b"com.apple.security.pkcs12" not in profile
            runner.install_enrollment(profile)
        yield observer.all_enrolled.addTimeout(60, reactor)
        refused = yield exchange(reactor, f"{server.url}/scep?operation=PKIOperation", method="POST",
                                 body=b"junk", content_type="application/x-pki-message")
        assert refused.status == 400 and b"not a SCEP pkiMessage" in refused.body  # any status comes back
        assert server.scep.outcomes == {"issued": DEVICES, "unreadable": 1} and keys.made == len(keys) == 0
        assert http.connections == DEVICES  # each transaction's three requests shared one connection
        for runner in fleet.runners:
            enrollment = runner.machine.enrollment
            identity = runner.machine.profiles.keychain.identity(enrollment.identity_uuid)
            assert isinstance(identity.private_key, rsa.RSAPrivateKey) and identity.private_key.key_size == 2048
            # The enrollment profile came CMS-signed by the server: SCEP enrolled from inside the signature.
            signed = runner.machine.profiles.get("com.mdmsim.enrollment")
            assert signed.signature is SignatureStatus.UNTRUSTED and len(signed.signer_certificates) == 2
            device = server.storage.get_device(runner.machine.facts.device_id)
            assert device is not None and device.cert_sha256 == identity.certificate.fingerprint(
                hashes.SHA256()).hex()
    finally:
        link.disconnect()
        transport.close()
        yield http.close()
        yield server.stopService()
    assert (tmp_path / "data" / "scep.sqlite3").stat().st_mode & 0o077 == 0


def test_the_serve_command_takes_the_enrollment_identity():
    parser = build_parser()
    assert parser.parse_args(["serve", "--enrollment-identity", "scep"]).enrollment_identity == "scep"
    assert parser.parse_args(["serve"]).enrollment_identity == "pkcs12"
    assert parser.parse_args(["fleet", "--enroll-url", "x", "--key-pool", "5"]).key_pool == 5
