"""Secrets at rest for the admin model: users' private keys and P12 passwords, sealed with AES-256-GCM.

The key lives in a 0600 file in the data directory; each sealed value is bound to its record (AAD).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..ca import write_private_file
from .contracts import AdminError

KEY_FILE = "admin-secrets.key"
_PREFIX = "v1:"  # lets a later format (key rotation) coexist with this one
_NONCE = 12
# In a redacted PKCS#12 payload (command_seal.py: the certificate alone, no password): the key went to the device.
KEY_DELIVERED = "mdmsimPrivateKeyDelivered"


class SecretBox:
    """Seals bytes under one AES-GCM key; `context` (user, setting, field) must match to open a value.

    Binding the context means a sealed private key copied onto another user's record will not open there.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise AdminError(f"the admin secrets key must be 32 bytes, not {len(key)}", 500)
        self._aead = AESGCM(key)

    @classmethod
    def ephemeral(cls) -> SecretBox:
        """A box with a fresh random key, for in-memory stores whose secrets die with the process."""
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def load_or_create(cls, data_dir: Path | str) -> SecretBox:
        """The key in `data_dir`/admin-secrets.key (mode 0600), created on first use."""
        path = Path(data_dir) / KEY_FILE
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise AdminError(f"{path} is readable by other users; chmod 600 it", 500)
            return cls(path.read_bytes())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        write_private_file(path, key)
        return cls(key)

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context.encode("utf-8"))
        return _PREFIX + base64.b64encode(sealed).decode("ascii")

    def open(self, token: str, context: str) -> bytes:
        """The plaintext; AdminError (500) if the token is damaged, belongs elsewhere or the key changed."""
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            raise AdminError(f"stored secret for {context} is not in a known format", 500)
        try:
            raw = base64.b64decode(token[len(_PREFIX):], validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode("utf-8"))
        except (binascii.Error, ValueError, InvalidTag):
            raise AdminError(
                f"stored secret for {context} cannot be opened (damaged, or {KEY_FILE} was replaced)", 500
            ) from None
