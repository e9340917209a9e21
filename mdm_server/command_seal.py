"""Commands that carry secrets (an InstallProfile with a PKCS#12 and its password) are sealed in the queue.

The admin seals what it queues with the secrets key (admin/secrets_at_rest.py) and gives storage the redacted
command (no keys, no passwords) that replaces it once acknowledged; the service opens a sealed payload only as
it sends it, so the database never holds a profile's key or password in the clear, nor sealed for long.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

from mdm_protocol.errors import ProtocolError
from mdm_protocol.pkcs12_memo import load_pkcs12
from mdm_protocol.plist import decode_plist, encode_plist
from mdm_protocol.profile_signing import unsigned

from .admin.secrets_at_rest import KEY_DELIVERED, SecretBox
from .storage.interface import NewCommand, QueuedCommand

SEALED = b"mdmsim-sealed:"  # no plist starts so: a sealed payload is told from a plain one by its first bytes
# What makes a profile secret: an identity payload, or any password-like key (Wi-Fi, VPN, accounts, PKCS#12,
# a SCEP challenge, a VPN shared secret). Key names are ASCII in XML and binary plists alike, and a signed
# profile carries its plist whole, so a profile without any of these bytes holds no such key.
_SECRET_MARKS = (b"pkcs12", b"Password", b"PrivateKey", b"Challenge", b"SharedSecret", b"EncryptedPayloadContent")
_SECRET_KEYS = frozenset({"PrivateKey", "EncryptedPayloadContent", "Challenge", "SharedSecret"})
PKCS12 = "com.apple.security.pkcs12"


def holds_secrets(profile: bytes) -> bool:
    """Whether a profile (XML or binary plist, signed or not) has a secret key anywhere in it."""
    if not any(mark in profile for mark in _SECRET_MARKS):
        return False  # the fast answer for most profiles
    try:
        return _has_secret(decode_plist(unsigned(profile)))
    except ProtocolError:
        return True  # unreadable but carrying a mark: sealed, as nothing proves it harmless


class CommandSeal:
    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def seal(self, command: NewCommand, forget_at: float | None = None) -> NewCommand:
        """The command sealed, with its redacted form for once it is acknowledged (or at `forget_at`)."""
        token = self.box.seal(command.payload, _context(command.command_uuid))
        return replace(command, payload=SEALED + token.encode("ascii"), redacted=redacted_command(command.payload),
                       forget_at=forget_at)

    def open(self, command_uuid: str, payload: bytes) -> bytes:
        """The plain command; a payload that was never sealed comes back as it is."""
        if not payload.startswith(SEALED):
            return payload
        return self.box.open(payload[len(SEALED):].decode("ascii"), _context(command_uuid))

    def opened(self, command: QueuedCommand) -> QueuedCommand:
        if not command.payload.startswith(SEALED):
            return command
        return replace(command, payload=self.open(command.command_uuid, command.payload))


def redacted_command(payload: bytes) -> bytes:
    """The command plist with its profile's secrets taken out: every PKCS#12 reduced to its certificates
    (marked KEY_DELIVERED), every password and private key dropped. The profile goes unsigned (its signature
    covered the secrets); what stays is what the readiness report needs to judge the device."""
    command = decode_plist(payload)
    body = command.get("Command", {})
    profile = body.get("Payload")
    if isinstance(profile, bytes):
        try:
            body["Payload"] = encode_plist(_redacted(decode_plist(unsigned(profile))))
        except ProtocolError:
            del body["Payload"]  # not a readable profile: nothing of it may stay
    return encode_plist(_redacted(command))


def _redacted(value: Any) -> Any:
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: _redacted(item) for key, item in value.items() if not _secret_key(key)}
    if value.get("PayloadType") == PKCS12:
        out.pop("PayloadContent", None)
        certificates = _certificates_only(value.get("PayloadContent"), value.get("Password"))
        if certificates is not None:
            out.update(PayloadContent=certificates, **{KEY_DELIVERED: True})
    return out


def _secret_key(key: str) -> bool:
    # EncryptedPayloadContent holds the same secrets, only encrypted to the device.
    return key.endswith("Password") or key in _SECRET_KEYS


def _has_secret(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_secret(item) for item in value)
    if not isinstance(value, dict):
        return False
    if value.get("PayloadType") == PKCS12:
        return True
    return any(_secret_key(str(key)) or _has_secret(item) for key, item in value.items())


def _certificates_only(data: object, password: object) -> bytes | None:
    if not isinstance(data, bytes):
        return None
    try:
        loaded = load_pkcs12(data, password.encode() if isinstance(password, str) else None)
    except ValueError:
        return None
    if loaded.cert is None:
        return None
    extra = [item.certificate for item in loaded.additional_certs]
    return pkcs12.serialize_key_and_certificates(None, None, loaded.cert.certificate, extra or None,
                                                 NoEncryption())


def _context(command_uuid: str) -> str:
    return f"command {command_uuid}"
