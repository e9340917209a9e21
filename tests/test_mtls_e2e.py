"""Mutual TLS end to end over real TLS on loopback: the identity as the TLS client certificate (SignMessage
false), from a trusted proxy's header, and every way of presenting the wrong one refused with no state change.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_server_e2e_tls import BytesBody
from twisted.internet import defer, ssl
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mdm_protocol.checkin import Authenticate, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import CommandReport, Status, encode_report
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.client_cert import parse_certificate_header
from mdm_server.pki import load_pkcs12
from mdm_server.storage.interface import EnrollmentState

CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm"
A, B = "a1" * 20, "b2" * 20

pytestmark = pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")


@implementer(IPolicyForHTTPS)
class ClientPolicy:
    """Trust our CA; present `identity` (certificate, key) as the TLS client certificate when given."""

    def __init__(self, ca_pem: bytes, identity=None) -> None:
        self.trust = ssl.Certificate.loadPEM(ca_pem)
        self.client = None
        if identity is not None:
            certificate, key = identity
            pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            self.client = ssl.PrivateCertificate.loadPEM(pem)

    def creatorForNetloc(self, hostname, port):
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self.trust, clientCertificate=self.client)


class Device:
    """Enrolls with the server's PKCS#12, then PUTs over TLS as told: signed or not, with a client certificate
    (its own, another's, none) or a proxy's header."""

    def __init__(self, reactor, server: MDMServer, pool) -> None:
        self.reactor, self.server, self.pool = reactor, server, pool
        self.identity = None
        self.profile = None

    def agent(self, identity=None) -> Agent:
        return Agent(self.reactor, ClientPolicy(self.server.tls.ca_certificate_pem, identity), pool=self.pool)

    @defer.inlineCallbacks
    def enroll(self):
        url = f"{self.server.url}/mdm/enroll?token={self.server.state.enroll_token}"
        response = yield self.agent().request(b"GET", url.encode())
        self.profile = parse_profile(unsigned((yield readBody(response))))
        (p12,) = self.profile.payloads_of_type("com.apple.security.pkcs12")
        loaded = load_pkcs12(p12.content["PayloadContent"], p12.content["Password"])
        self.identity = (loaded.certificate, loaded.private_key)

    @property
    def mdm(self) -> dict:
        return self.profile.payloads_of_type("com.apple.mdm")[0].content

    @defer.inlineCallbacks
    def put(self, path: str, body: bytes, content_type: str | None = CHECKIN, *, tls_identity=(), signer=None,
            headers: dict | None = None):
        """`tls_identity`: () this device's own, None no client certificate, else (certificate, key)."""
        fields = dict(headers or {})
        if content_type:
            fields["Content-Type"] = content_type
        if signer is not None:
            fields["Mdm-Signature"] = mdm_signature(body, signer[0], signer[1])
        presented = self.identity if tls_identity == () else tls_identity
        agent = self.agent(presented)
        raw = Headers({name: [value] for name, value in fields.items()})
        response = yield agent.request(b"PUT", f"{self.server.url}{path}".encode(), raw, BytesBody(body))
        return response.code, (yield readBody(response))

    def enrollment(self, udid: str) -> list[bytes]:
        topic = self.mdm["Topic"]
        return [encode_checkin(Authenticate(topic=topic, udid=udid, os_version="18.1", product_name="iPhone17,1")),
                encode_checkin(TokenUpdate(topic=topic, udid=udid, token=b"\x01" * 32, push_magic="magic"))]


@pytest.fixture
def start(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: these tests really use sockets

    servers, pools = [], []

    @defer.inlineCallbacks
    def start(**options):
        config = ServerConfig(data_dir=tmp_path / f"data{len(servers)}", listen="ssl:0:interface=127.0.0.1",
                              push_link=None, server_names=("127.0.0.1",), **options)
        server = MDMServer(config, clock=reactor, reactor=reactor)
        server.startService()
        servers.append(server)
        yield server.listening()
        pool = HTTPConnectionPool(reactor, persistent=False)
        pools.append(pool)
        device = Device(reactor, server, pool)
        yield device.enroll()
        return server, device

    yield start
    for pool in pools:
        pytest_twisted.blockon(pool.closeCachedConnections())
    for server in servers:
        pytest_twisted.blockon(server.stopService())


def stranger() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed identity: a client certificate that does not chain to the server's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
                   .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    return certificate, key


@pytest.mark.parametrize("lean", [True, False], ids=["lean-channel", "twisted-web"])
@pytest_twisted.inlineCallbacks
def test_pkcs12_and_mtls_with_sign_message_false(start, lean):
    server, device = yield start(sign_message=False, lean_device_http=lean)
    assert device.mdm["SignMessage"] is False
    for body in device.enrollment(A):
        assert (yield device.put("/mdm/checkin", body)) == (200, b"")
    assert server.storage.get_device(A).state is EnrollmentState.ENROLLED
    # mdmb sends its command reports with no Content-Type: routed by the path.
    idle = encode_report(CommandReport(Status.IDLE, udid=A))
    assert (yield device.put("/mdm/connect", idle, None)) == (200, b"")
    assert server.verifier._clients and not server.verifier._verified  # no Mdm-Signature was needed


@pytest_twisted.inlineCallbacks
def test_pkcs12_and_signature_with_the_client_certificate_too(start):
    server, device = yield start()
    assert device.mdm["SignMessage"] is True
    for body in device.enrollment(A):
        assert (yield device.put("/mdm/checkin", body, signer=device.identity, tls_identity=None)) == (200, b"")
    assert server.storage.get_device(A).state is EnrollmentState.ENROLLED
    idle = encode_report(CommandReport(Status.IDLE, udid=A))
    assert (yield device.put("/mdm/connect", idle, CONNECT, signer=device.identity)) == (200, b"")


@pytest_twisted.inlineCallbacks
def test_refusals_have_a_reason_and_change_nothing(start):
    server, device = yield start(sign_message=False)
    other = Device(device.reactor, server, device.pool)
    yield other.enroll()
    for body in device.enrollment(A):
        assert (yield device.put("/mdm/checkin", body)) == (200, b"")
    before = server.storage.get_device(A)
    update = device.enrollment(A)[1]
    cases = [
        ({"tls_identity": None}, b"no Mdm-Signature header and no TLS client certificate"),
        ({"tls_identity": stranger()}, b"device identity refused"),
        ({"tls_identity": other.identity}, b"does not belong to device"),  # another device's certificate
        ({"signer": other.identity}, b"is not the Mdm-Signature's signer"),
    ]
    for options, reason in cases:
        status, body = yield device.put("/mdm/checkin", update, **options)
        assert status == 400 and reason in body, (options, body)
        assert server.storage.get_device(A) == before
    status, body = yield device.put("/mdm/checkin", other.enrollment(B)[0], tls_identity=stranger())
    assert status == 400 and server.storage.get_device(B) is None


def nginx_header(certificate: x509.Certificate) -> str:
    return quote(certificate.public_bytes(serialization.Encoding.PEM).decode(), safe="")


@pytest.mark.parametrize("lean", [True, False], ids=["lean-channel", "twisted-web"])
@pytest_twisted.inlineCallbacks
def test_a_trusted_proxy_header_identifies_the_device(start, lean):
    server, device = yield start(sign_message=False, client_cert_header="X-SSL-Client-Cert",
                                 trusted_proxies=("127.0.0.1",), lean_device_http=lean)
    header = {"X-SSL-Client-Cert": nginx_header(device.identity[0])}
    for body in device.enrollment(A):
        assert (yield device.put("/mdm/checkin", body, tls_identity=None, headers=header)) == (200, b"")
    assert server.storage.get_device(A).state is EnrollmentState.ENROLLED


@pytest.mark.parametrize("lean", [True, False], ids=["lean-channel", "twisted-web"])
@pytest_twisted.inlineCallbacks
def test_the_same_header_from_an_untrusted_address_is_refused(start, lean):
    server, device = yield start(sign_message=False, client_cert_header="X-SSL-Client-Cert",
                                 trusted_proxies=("192.0.2.7",), lean_device_http=lean)
    header = {"X-SSL-Client-Cert": nginx_header(device.identity[0])}
    for tls_identity in (None, ()):  # refused even beside a good TLS client certificate: it is a forgery
        status, body = yield device.put("/mdm/checkin", device.enrollment(A)[0], tls_identity=tls_identity,
                                        headers=header)
        assert status == 400 and b"X-SSL-Client-Cert header from 127.0.0.1, which is not a trusted proxy" in body
    assert server.storage.get_device(A) is None


def test_client_certificate_headers_rfc9440_and_nginx():
    certificate, _ = stranger()
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert parse_certificate_header(b":" + base64.b64encode(der) + b":") == der
    assert parse_certificate_header(nginx_header(certificate).encode()) == der
    from mdm_protocol.cms import SignatureError

    for bad in (b":not base64!:", b"-----BEGIN%20CERTIFICATE-----", b"garbage"):
        with pytest.raises(SignatureError, match="unreadable client certificate header"):
            parse_certificate_header(bad)


@pytest.mark.parametrize("sign_message", [False, True])
@pytest_twisted.inlineCallbacks
def test_the_fleet_enrolls_by_mutual_tls_and_signs_only_when_told(tmp_path, sign_message):
    from test_fleet_e2e_tls import Until
    from twisted.internet import reactor

    from device_sim.enroll_fetch import fetch_enrollment
    from device_sim.fleet import Fleet, FleetSpec
    from device_sim.https_transport import HTTPSTransport
    from device_sim.memory_http import MemoryHTTP
    from device_sim.runner import InProcessPush
    from mdm_world.admin_client import AdminClient

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1", push_link=None,
                          server_names=("127.0.0.1",), sign_message=sign_message)
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    transport, observer = HTTPSTransport(reactor), Until()
    fleet = Fleet(FleetSpec(4, seed=3), clock=reactor, transport=transport, push=InProcessPush(server.apns),
                  observer=observer)
    try:
        for index in range(4):
            runner = fleet.add(index)
            runner.install_enrollment((yield fetch_enrollment(
                reactor, f"{server.url}/mdm/enroll?token={server.state.enroll_token}")))
        yield observer.wait(lambda o: o.enrolled == 4).addTimeout(30, reactor)
        admin = AdminClient(MemoryHTTP(server.site), "admin", server.admin_password)
        ids = [r.machine.facts.device_id for r in fleet.runners]
        admin.post("/api/v1/commands", {"deviceIds": ids, "command": {"RequestType": "DeviceInformation",
                                                                      "Queries": ["UDID"]}})
        yield observer.wait(lambda o: o.sessions == 4).addTimeout(30, reactor)
        assert observer.commands[("DeviceInformation", "Acknowledged")] == 4
    finally:
        transport.close()
        yield server.stopService()
    # Each device presented its own identity (one per device, sessions never shared), and signed only if told.
    assert len(server.verifier._clients) == 4
    assert bool(server.verifier._verified) is sign_message


def test_serve_options(tmp_path, capsys):
    from mdmsim.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).sign_message is True
    args = parser.parse_args(["serve", "--sign-message", "false", "--client-cert-header", "Client-Cert",
                              "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "::1"])
    assert (args.sign_message, args.client_cert_header, args.trusted_proxy) == (
        False, "Client-Cert", ["127.0.0.1", "::1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--sign-message", "maybe"])
    lonely = parser.parse_args(["serve", "--memory", "--data-dir", str(tmp_path), "--client-cert-header", "X"])
    assert lonely.func(lonely) == 2 and "go together" in capsys.readouterr().err
