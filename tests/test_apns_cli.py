"""`mdmsim apns issue-cert` writes a push certificate a third-party server can upload; every flag of the new
commands has help; `mdmsim serve --apns-url` assembles a server whose topic is its push certificate's."""

from __future__ import annotations

import argparse
import stat
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from server_kit import make_server

from mdm_server.ca import APNS_DEVELOPMENT_OID, APNS_PRODUCTION_OID
from mdm_server.push.apns_client import APNsProviderClient, ProviderSettings
from mdmsim.cli import build_parser, main

TOPIC = "com.apple.mgmt.External.5e6c0c3e-2f07-4d8e-9b5a-0c1b2d3e4f50"


def _issue(tmp_path, *extra: str) -> tuple[x509.Certificate, bytes]:
    assert main(["apns", "issue-cert", "--data-dir", str(tmp_path), "--topic", TOPIC,
                 "--out", str(tmp_path / "push"), *extra]) == 0
    return x509.load_pem_x509_certificate((tmp_path / "push.pem").read_bytes()), (tmp_path / "push.key").read_bytes()


def test_issue_cert_writes_a_push_certificate_for_the_topic_signed_by_the_gateway_ca(tmp_path):
    certificate, key_pem = _issue(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == TOPIC
    assert serialization.load_pem_private_key(key_pem, None).public_key() == certificate.public_key()
    assert stat.S_IMODE((tmp_path / "push.key").stat().st_mode) == 0o600
    assert {e.oid for e in certificate.extensions} >= {APNS_PRODUCTION_OID}


def test_issue_cert_for_development_and_a_short_validity(tmp_path):
    certificate, _ = _issue(tmp_path, "--development", "--validity", "10m")
    left = certificate.not_valid_after_utc - datetime.now(UTC)
    assert APNS_DEVELOPMENT_OID in {e.oid for e in certificate.extensions}
    assert 500 < left.total_seconds() <= 600


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield parser.prog, action


def test_every_flag_of_the_apns_commands_and_serves_apns_group_has_help():
    parser = build_parser()
    missing = [(prog, action.dest) for prog, action in _actions(parser)
               if ("apns" in prog or "apns" in action.dest) and action.help != argparse.SUPPRESS
               and not (action.help or "").strip()]
    assert missing == []
    assert any(prog == "mdmsim apns issue-cert" for prog, _ in _actions(parser))


def test_a_server_with_a_provider_takes_its_topic_from_the_push_certificate(tmp_path):
    certificate, key_pem = _issue(tmp_path)
    settings = ProviderSettings("https://localhost:2197", certificate.public_bytes(serialization.Encoding.PEM),
                                key_pem, (tmp_path / "ca.pem").read_bytes())
    server = make_server(tmp_path, apns_provider=settings)
    assert server.state.topic == TOPIC
    assert isinstance(server.waker.pusher, APNsProviderClient)
    plain = make_server(tmp_path / "plain")
    assert plain.waker.pusher is plain.apns  # without a provider: the in-process simulation
