"""SHA-1 Mdm-Signatures (mdmb's default digest, made here by the openssl CLI): refused with a clear reason, and
accepted with `allow_sha1_signatures` (`mdmsim serve --allow-sha1-signatures`)."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from server_kit import CHECKIN, SignedDevice, make_server

from mdm_protocol.checkin import Authenticate, encode_checkin
from mdm_server.ca import private_key_pem
from mdmsim.cli import build_parser

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _sha1_signature(device: SignedDevice, body: bytes, tmp_path) -> str:
    (tmp_path / "me.pem").write_bytes(device.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "me.key").write_bytes(private_key_pem(device.key))
    der = subprocess.run(["openssl", "cms", "-sign", "-binary", "-md", "sha1", "-signer", "me.pem", "-inkey",
                          "me.key", "-outform", "DER"], input=body, capture_output=True, check=True,
                         cwd=tmp_path).stdout
    return base64.b64encode(der).decode("ascii")


def _authenticate(server, tmp_path):
    device = SignedDevice(server, "5HA1" + "0" * 36)
    body = encode_checkin(Authenticate(topic=server.state.topic, udid=device.udid, os_version="17.5",
                                       build_version="21F79", product_name="iPhone15,2"))
    return device.put(body, CHECKIN, signature=_sha1_signature(device, body, tmp_path))


def test_a_sha1_mdm_signature_is_refused_by_default(tmp_path):
    response = _authenticate(make_server(tmp_path), tmp_path)
    assert response.status == 400 and b"sha1" in response.body.lower()


def test_a_sha1_mdm_signature_is_accepted_when_allowed(tmp_path):
    assert _authenticate(make_server(tmp_path, allow_sha1_signatures=True), tmp_path).status == 200
    assert build_parser().parse_args(["serve", "--allow-sha1-signatures"]).allow_sha1_signatures is True
