"""What a simulated device does to a profile before reading it: unwrap a CMS signature, decrypt
EncryptedPayloadContent with its identities (SPEC 8). The result goes on to `install_rules.plan_install`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mdm_protocol.errors import PROFILE, PlistError, SignatureError
from mdm_protocol.plist import decode_plist
from mdm_protocol.profile_signing import (
    DecryptError,
    SignedProfile,
    decrypt_payload_content,
    open_signed_profile,
    unreadable_signed_profile,
)

from .install_rules import install_failure
from .keychain import Keychain, Moment, as_utc

ENCRYPTED_KEY = "EncryptedPayloadContent"
_ENCRYPTED_MARKER = ENCRYPTED_KEY.encode("ascii")


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """The profile to validate (plist bytes, or the decrypted plist) and what its envelope said."""

    source: bytes | Mapping[str, Any]
    signature: SignedProfile | None
    encrypted: bool


def unwrap_profile(data: bytes, keychain: Keychain, *, now: Moment) -> Unwrapped:
    """Unwrap `data` as iOS does; ProfileError when CMS cannot be read (4000 ← 1000) or decryption fails (1006).

    A signature that does not verify is recorded, not refused: iOS installs the profile as Not Verified.
    """
    try:
        signature = open_signed_profile(bytes(data), roots=keychain.trusted_roots(), now=as_utc(now))
    except SignatureError as exc:
        raise unreadable_signed_profile(exc.reason) from None
    content = bytes(data) if signature is None else signature.content
    if _ENCRYPTED_MARKER not in content:
        return Unwrapped(content, signature, False)
    try:
        plist = decode_plist(content)
    except PlistError:
        return Unwrapped(content, signature, False)  # validation reports the malformed plist
    if not isinstance(plist, dict) or ENCRYPTED_KEY not in plist:
        return Unwrapped(content, signature, False)
    return Unwrapped(_decrypted(plist, keychain), signature, True)


def _decrypted(plist: dict[str, Any], keychain: Keychain) -> dict[str, Any]:
    identities = [(item.certificate, item.private_key) for item in keychain.identities()
                  if item.private_key is not None]
    try:
        payloads = decrypt_payload_content(plist[ENCRYPTED_KEY], identities)
    except DecryptError as exc:
        identifier = plist.get("PayloadIdentifier")
        name = plist.get("PayloadDisplayName") or identifier
        name = name if isinstance(name, str) else "profile"
        raise install_failure(name, PROFILE[1006], PROFILE[1006].description,
                              f"profile {identifier}: {exc.reason}") from None
    opened = {key: value for key, value in plist.items() if key != ENCRYPTED_KEY}
    opened["PayloadContent"] = payloads
    opened["IsEncrypted"] = True
    return opened


__all__ = ["Unwrapped", "unwrap_profile"]
