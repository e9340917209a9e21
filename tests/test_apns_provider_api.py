"""The simulated APNs's provider API over real HTTP/2 with TLS on loopback: every status and reason of Apple's
documentation, answered for the request that earns it; apns-id echoed; GOAWAY when the gateway stops."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest_twisted
from apns_kit import NOW, TOPIC, connect, gateway
from cryptography.hazmat.primitives.serialization import Encoding
from h2.errors import ErrorCodes

from apns_sim.provider_api import Reason
from mdm_server.ca import CertificateAuthority, private_key_pem
from mdm_world.apns_gateway import PushCertificate

TOKEN, OTHER, GONE, STALE, UNKNOWN = (bytes([n]) * 32 for n in range(1, 6))
APNS_ID = "8f0c2a2e-57a7-4b1e-9e34-6a4f0d9c1b2a"
BODY = json.dumps({"mdm": "magic"}).encode()


def _certificates(server) -> dict[str, PushCertificate | None]:
    pki, now = server.pki, datetime.fromtimestamp(NOW, UTC)
    foreign = CertificateAuthority.create("someone else", now=now).issue_push_certificate(TOPIC, now)
    plain, key = pki.authority.issue_device_identity("no topic", now)  # our CA, but no subject UID
    return {
        "good": pki.issue_push_certificate(TOPIC, now=now),
        "none": None,
        "foreign": _pem(*foreign),
        "expired": pki.issue_push_certificate(TOPIC, now=now - timedelta(days=3), validity=timedelta(days=1)),
        "development": pki.issue_push_certificate(TOPIC, now=now, production=False),
        "not-mdm": pki.issue_push_certificate("com.example.app", now=now),
        "no-topic": _pem(plain, key),
    }


def _pem(certificate, key) -> PushCertificate:
    return PushCertificate(TOPIC, certificate.public_bytes(Encoding.PEM), private_key_pem(key))




def _path(token_hex: str) -> str:
    return "/3/device/" + token_hex

# (certificate, method, path, headers, body) -> (status, reason)
CASES = [
    ("good", "POST", _path(TOKEN.hex()), {"apns-id": APNS_ID, "apns-push-type": "mdm", "apns-topic": TOPIC,
                                           "apns-expiration": "0", "apns-priority": "10"}, BODY, 200, None),
    ("good", "POST", "/3/other", {}, BODY, 404, Reason.BAD_PATH),
    ("good", "GET", _path(TOKEN.hex()), {}, b"", 405, Reason.METHOD_NOT_ALLOWED),
    ("good", "POST", _path(TOKEN.hex()), {"apns-id": "not-a-uuid"}, BODY, 400, Reason.BAD_MESSAGE_ID),
    ("none", "POST", _path(TOKEN.hex()), {}, BODY, 403, Reason.BAD_CERTIFICATE),
    ("foreign", "POST", _path(TOKEN.hex()), {}, BODY, 403, Reason.BAD_CERTIFICATE),
    ("expired", "POST", _path(TOKEN.hex()), {}, BODY, 403, Reason.BAD_CERTIFICATE),
    ("development", "POST", _path(TOKEN.hex()), {}, BODY, 403, Reason.BAD_CERTIFICATE_ENVIRONMENT),
    ("not-mdm", "POST", _path(TOKEN.hex()), {}, BODY, 403, Reason.FORBIDDEN),
    ("good", "POST", _path(""), {}, BODY, 400, Reason.MISSING_DEVICE_TOKEN),
    ("good", "POST", _path("abc"), {}, BODY, 400, Reason.BAD_DEVICE_TOKEN),
    ("good", "POST", _path(UNKNOWN.hex()), {}, BODY, 400, Reason.BAD_DEVICE_TOKEN),
    ("good", "POST", _path(TOKEN.hex()), {"apns-topic": "bad topic"}, BODY, 400, Reason.BAD_TOPIC),
    ("no-topic", "POST", _path(TOKEN.hex()), {}, BODY, 400, Reason.MISSING_TOPIC),
    ("good", "POST", _path(TOKEN.hex()), {"apns-topic": TOPIC + ".x"}, BODY, 400, Reason.TOPIC_DISALLOWED),
    ("good", "POST", _path(TOKEN.hex()), {"apns-push-type": "alert"}, BODY, 400, Reason.INVALID_PUSH_TYPE),
    ("good", "POST", _path(TOKEN.hex()), {"apns-expiration": "soon"}, BODY, 400, Reason.BAD_EXPIRATION_DATE),
    ("good", "POST", _path(TOKEN.hex()), {"apns-priority": "7"}, BODY, 400, Reason.BAD_PRIORITY),
    ("good", "POST", _path(TOKEN.hex()), {"apns-collapse-id": "c" * 65}, BODY, 400, Reason.BAD_COLLAPSE_ID),
    ("good", "POST", _path(TOKEN.hex()), {}, b"", 400, Reason.PAYLOAD_EMPTY),
    ("good", "POST", _path(TOKEN.hex()), {}, b'{"mdm": "' + b"x" * 4096 + b'"}', 413, Reason.PAYLOAD_TOO_LARGE),
    ("good", "POST", _path(OTHER.hex()), {}, BODY, 400, Reason.DEVICE_TOKEN_NOT_FOR_TOPIC),
    ("good", "POST", _path(GONE.hex()), {}, BODY, 410, Reason.UNREGISTERED),
    ("good", "POST", _path(STALE.hex()), {}, BODY, 410, Reason.EXPIRED_TOKEN),
]
BURSTS = [(Reason.TOO_MANY_REQUESTS, 429), (Reason.SERVICE_UNAVAILABLE, 503), (Reason.INTERNAL_SERVER_ERROR, 500)]


def _registered(server) -> None:
    core = server.gateway
    for token in (TOKEN, GONE, STALE):
        core.register(token, TOPIC)
    core.register(OTHER, "com.apple.mgmt.External.other")
    core.unregister(GONE)
    core.unregister(STALE, Reason.EXPIRED_TOKEN)


@pytest_twisted.inlineCallbacks
def test_every_status_and_reason_over_http2_with_tls(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's: this test uses real sockets

    server, clock = gateway(tmp_path)
    _registered(server)
    yield server.listen(reactor)
    certificates, clients, got, want = _certificates(server), {}, [], []
    try:
        for name, method, path, headers, body, status, reason in CASES:
            if name not in clients:
                clients[name] = yield connect(reactor, server.provider_port, server.pki.tls.ca_certificate_pem,
                                              certificates[name])
            reply = yield clients[name].request(path, headers, body, method=method)
            got.append((name, path[-8:], headers, reply.status, json.loads(reply.body or b"{}").get("reason")))
            want.append((name, path[-8:], headers, status, reason and reason.value))
            assert len(reply.headers["apns-id"]) == 36
        for reason, status in BURSTS:
            server.gateway.faults.start_burst(reason, clock.seconds(), 1.0)
            reply = yield clients["good"].request(_path(TOKEN.hex()), {}, BODY)
            got.append((reason.value, reply.status, json.loads(reply.body)["reason"]))
            want.append((reason.value, status, reason.value))
            clock.advance(1.0)
    finally:
        for client in clients.values():
            client.transport.loseConnection()
        yield server.stop()
    assert got == want


def test_every_reason_is_exercised_by_the_conformance_table():
    # Shutdown is covered over the wire by test_goaway_on_shutdown_and_shutdown_reason below.
    covered = {case[-1] for case in CASES} | {reason for reason, _ in BURSTS} | {Reason.SHUTDOWN}
    assert covered - {None} == set(Reason)


@pytest_twisted.inlineCallbacks
def test_200_echoes_the_apns_id_and_410_carries_the_unregistration_time(tmp_path):
    from twisted.internet import reactor

    server, clock = gateway(tmp_path)
    _registered(server)
    yield server.listen(reactor)
    good = _certificates(server)["good"]
    client = yield connect(reactor, server.provider_port, server.pki.tls.ca_certificate_pem, good)
    try:
        ok = yield client.request(_path(TOKEN.hex()), {"apns-id": APNS_ID}, BODY)
        generated = yield client.request(_path(TOKEN.hex()), {}, BODY)
        gone = yield client.request(_path(GONE.hex()), {"apns-id": APNS_ID}, BODY)
    finally:
        client.transport.loseConnection()
        yield server.stop()
    assert (ok.status, ok.headers["apns-id"], ok.body) == (200, APNS_ID, b"")
    assert generated.status == 200 and generated.headers["apns-id"] != APNS_ID
    assert json.loads(gone.body) == {"reason": "Unregistered", "timestamp": int(NOW * 1000)}
    assert gone.headers["content-type"] == "application/json"


@pytest_twisted.inlineCallbacks
def test_goaway_on_shutdown_and_shutdown_reason(tmp_path):
    from twisted.internet import reactor

    server, _ = gateway(tmp_path)
    _registered(server)
    yield server.listen(reactor)
    good = _certificates(server)["good"]
    client = yield connect(reactor, server.provider_port, server.pki.tls.ca_certificate_pem, good)
    before = yield client.request(_path(TOKEN.hex()), {}, BODY)
    server.gateway.shutting_down = True  # the first step of stop(): what arrives now is refused
    during = yield client.request(_path(TOKEN.hex()), {}, BODY)
    yield server.stop()
    yield client.lost
    assert (before.status, during.status, json.loads(during.body)) == (200, 503, {"reason": "Shutdown"})
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
